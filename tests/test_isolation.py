"""The suite runs the same wherever a user starts it: these tests check the guards of
tests/conftest.py (config lookup, AWS and MLflow settings, network) from inside a test."""

from __future__ import annotations

import os
import socket

import pytest
from pytest_socket import SocketConnectBlockedError

from odorch.cli import main


def test_a_connection_off_this_machine_is_refused_before_it_is_made():
    # A name that never resolves: without the guard this fails in DNS with gaierror instead.
    with socket.socket() as sock, pytest.warns(UserWarning), pytest.raises(SocketConnectBlockedError):
        sock.connect(("odorch-test.invalid", 443))


def test_loopback_stays_open():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_an_odorch_yaml_in_the_working_directory_is_not_read(runner, tmp_path, monkeypatch, isolated_environment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odorch.yaml").write_text("common:\n  runs-dir: /nonexistent/runs\ntrain:\n  epochs: 999\n")
    result = runner.invoke(main, ["config", "show", "train"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"config file: {isolated_environment}"
    assert "999" not in result.output and "/nonexistent" not in result.output


def test_no_aws_or_mlflow_setting_of_the_shell_reaches_a_test():
    leaked = sorted(n for n in os.environ if n.startswith(("AWS_", "MLFLOW_"))
                    and n not in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED"))
    assert leaked == []
    assert os.environ["AWS_CONFIG_FILE"] == os.devnull and os.environ["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull


def test_a_boto3_client_outside_the_harness_has_no_credentials():
    """A new session (boto3's default one may still hold an earlier test's harness credentials)."""
    import boto3
    from botocore.exceptions import NoCredentialsError

    with pytest.raises(NoCredentialsError):
        boto3.session.Session().client("sts", region_name="us-east-1").get_caller_identity()
