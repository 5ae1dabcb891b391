"""A user's mistake in a cloud option ends every command in one line `error: ...` (or click's
usage error) and a non-zero exit, never a traceback: odorch.cli maps every OdorchError (and
botocore's errors) in one place.

The session fixture in conftest.py clears AWS_*, points boto3 at no config or credentials and
turns instance metadata off; nothing here reaches a network (no credentials: botocore refuses
to sign before sending, and pytest-socket refuses anything off the loopback)."""

import pytest

from odorch.cli import main

ROLE = "arn:aws:iam::123456789012:role/odorch-sagemaker"


def run(runner, *args):
    """The command's result; a traceback would surface here as the exception itself."""
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result):
    """The single error line of a failed command (click's usage errors add Usage/Try lines)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def run_dir(tmp_path):
    """A job folder with a model, as `odorch deploy` takes it."""
    model = tmp_path / "job" / "model"
    model.mkdir(parents=True)
    (model / "model.pth").write_bytes(b"not read before the region is known")
    (model / "config.json").write_text("{}")
    return tmp_path / "job"


@pytest.mark.parametrize("command", [
    ["train", "--data", "{data}", "--instance", "ml.g5.xlarge", "--bucket", "b", "--role", ROLE],
    ["train", "--data", "{data}", "--algorithm", "builtin-od", "--instance", "ml.p3.2xlarge", "--bucket", "b",
     "--role", ROLE],
    ["tune", "--data", "{data}", "--instance", "ml.g5.xlarge", "--bucket", "b", "--role", ROLE, "--max-jobs", "2"],
    ["deploy", "{run}", "--instance", "ml.m5.xlarge", "--bucket", "b", "--role", ROLE],
    ["endpoints", "list"],
    ["endpoints", "delete", "odorch-job"],
    ["predict", "--endpoint", "odorch-job", "{image}", "--out", "{out}"],
])
def test_no_region(runner, tiny_data, run_dir, tmp_path, command):
    image = next((tiny_data / "images").iterdir())
    args = [a.format(data=tiny_data, run=run_dir, image=image, out=tmp_path / "out") for a in command]
    line = one_error_line(run(runner, *args, "--runs-dir", tmp_path / "runs") if command[0] in ("train", "tune")
                          else run(runner, *args))
    assert "no AWS region: pass --region or set AWS_DEFAULT_REGION" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command, missing", [
    (["train", "--instance", "ml.g5.xlarge", "--bucket", "b"], "needs --role"),
    (["train", "--instance", "ml.g5.xlarge", "--role", ROLE], "needs --bucket"),
    (["train", "--region", "eu-west-1"], "--region only apply to SageMaker jobs: add --instance TYPE"),
    (["tune", "--bucket", "b"], "--bucket only apply to SageMaker tuning: add --instance TYPE"),
])
def test_missing_or_misplaced_option(runner, tiny_data, tmp_path, command, missing):
    result = run(runner, *command, "--data", tiny_data, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and missing in one_error_line(result)
    assert not (tmp_path / "runs").exists()


SAGEMAKER = ["--region", "eu-west-1", "--bucket", "odorch-bucket", "--role", ROLE, "--instance", "ml.g5.xlarge"]


@pytest.mark.parametrize("command", [["train"], ["tune", "--max-jobs", "2"]])
@pytest.mark.parametrize("change, fix", [
    (["--role", "odorch-sagemaker"], "--role 'odorch-sagemaker' is not an IAM role ARN"),
    (["--instance", "ml.nope.xlarge"], "--instance 'ml.nope.xlarge' is not a known SageMaker training instance type"),
    (["--bucket", "Not_A_Bucket!"], "--bucket Not_A_Bucket!"),
    (["--region", "xx-nowhere-1"], "--region xx-nowhere-1"),
    ([], "--bucket odorch-bucket"),  # valid options, no credentials: HeadBucket cannot be signed
])
def test_invalid_cloud_option(runner, tiny_data, tmp_path, command, change, fix):
    options = dict(zip(SAGEMAKER[::2], SAGEMAKER[1::2]))
    options.update(zip(change[::2], change[1::2]))
    result = run(runner, *command, "--data", tiny_data, "--runs-dir", tmp_path / "runs",
                 *[x for kv in options.items() for x in kv])
    line = one_error_line(result)
    assert result.exit_code == 1 and fix in line and line.startswith("error: not starting"), line
    assert not (tmp_path / "runs").exists()


def test_deploy_invalid_options_are_listed_on_one_line(runner, run_dir):
    result = run(runner, "deploy", run_dir, "--instance", "ml.nope.xlarge", "--bucket", "b", "--role", "me",
                 "--region", "eu-west-1")
    line = one_error_line(result)
    assert result.exit_code == 1 and "--role 'me' is not an IAM role ARN" in line
    assert "--instance 'ml.nope.xlarge' is not a known SageMaker instance type" in line


def test_a_caller_of_main_gets_the_error_raised(tmp_path):
    """`odorch quickstart` re-enters main(standalone_mode=False): a failed step must raise, not
    return an exit status that nobody reads."""
    from odorch.cli import UserError

    with pytest.raises(UserError, match="no job 'nope' in"):
        main(["jobs", "describe", "nope", "--runs-dir", str(tmp_path)], standalone_mode=False)
