import re

import pytest

from odorch import aws_tables as t


def test_tables_are_dated():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", t.TABLES_DATE)
    assert t.TABLES_DATE in (t.__doc__ or "") or "TABLES_DATE" in (t.__doc__ or "")


@pytest.mark.parametrize(
    "raw, expected",
    [("p3.2xlarge", "ml.p3.2xlarge"), ("ml.p3.2xlarge", "ml.p3.2xlarge"), (" ML.G4DN.XLarge ", "ml.g4dn.xlarge")],
)
def test_normalize_instance(raw, expected):
    assert t.normalize_instance(raw) == expected


def test_known_and_unknown_instances():
    assert t.is_known_instance("g4dn.xlarge")
    assert t.is_known_instance("ml.p4d.24xlarge")
    assert not t.is_known_instance("ml.p3.3xlarge")
    assert not t.is_known_instance("")
    with pytest.raises(t.UnknownInstanceError, match="ml.g4dn.xlarge"):  # lists the known ones
        t.instance_info("ml.p3.3xlarge")


def test_instance_info():
    info = t.instance_info("p3.8xlarge")
    assert info["name"] == "ml.p3.8xlarge"
    assert (info["vcpus"], info["gpus"], info["gpu_memory_gb"]) == (32, 4, 16)
    assert info["usd_per_hour"] > 0
    cpu = t.instance_info("ml.m5.xlarge")
    assert cpu["gpus"] == 0 and cpu["gpu_memory_gb"] == 0
    # every row is self-consistent
    for name in t.known_instances():
        row = t.instance_info(name)
        assert row["vcpus"] > 0 and row["usd_per_hour"] > 0
        assert (row["gpus"] > 0) == (row["gpu_memory_gb"] > 0) == (row["gpu_model"] is not None)


def test_gpu_instance_gets_gpu_training_image_in_region():
    uri = t.training_image("eu-west-1", "g4dn.xlarge")
    assert uri == f"763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:{t.TRAINING_TAG_GPU}"
    assert "-gpu-" in uri and "-cu13" in uri and uri.endswith("-sagemaker")
    volta = t.training_image("us-east-1", "ml.p3.2xlarge")  # CUDA 13 images do not run on V100
    assert volta.endswith(f"pytorch-training:{t.TRAINING_TAG_VOLTA}") and "-cu129-" in volta
    assert "end of patch on 2026-08-06" in t.support_warning(volta, today=t.TABLES_DATE)


def test_cpu_instance_gets_cpu_training_image():
    uri = t.training_image("us-east-2", "ml.m5.xlarge")
    assert uri == f"763104351884.dkr.ecr.us-east-2.amazonaws.com/pytorch-training:{t.TRAINING_TAG_CPU}"
    assert "-cpu-" in uri and "-gpu-" not in uri


def test_region_specific_dlc_accounts():
    assert t.training_image("ap-east-1", "ml.p3.2xlarge").startswith("871362719292.dkr.ecr.ap-east-1.amazonaws.com/")
    assert t.inference_image("me-south-1", "ml.c5.xlarge").startswith("217643126080.dkr.ecr.me-south-1.amazonaws.com/")
    assert t.inference_image("cn-north-1", "ml.c5.xlarge").startswith(
        "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-inference:"
    )


def test_inference_images():
    gpu = t.inference_image("us-west-2", "ml.g5.xlarge")
    cpu = t.inference_image("us-west-2", "ml.c5.xlarge")
    assert gpu == f"763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:{t.INFERENCE_TAG_GPU}"
    assert cpu == f"763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:{t.INFERENCE_TAG_CPU}"
    assert "-gpu-" in gpu and "-cpu-" in cpu


def test_dlc_version_satisfies_entrypoint():
    for version, tags in ((t.PYTORCH_DLC_VERSION, (t.TRAINING_TAG_GPU, t.TRAINING_TAG_CPU)),
                          (t.PYTORCH_INFERENCE_DLC_VERSION, (t.INFERENCE_TAG_GPU, t.INFERENCE_TAG_CPU))):
        assert tuple(int(x) for x in version.split(".")[:2]) >= (2, 1)
        assert all(tag.startswith(version + "-") for tag in tags)


def test_default_training_images_are_supported_on_the_table_date_and_ended_ones_warn():
    """Defect 12: the table of 2026-11-22 sent PyTorch 2.6 training images, past their end of patch."""
    for instance in ("ml.g5.xlarge", "ml.m5.xlarge"):
        assert t.support_warning(t.training_image("us-east-1", instance), today=t.TABLES_DATE) is None
    old = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312-cu126-ubuntu22.04-sagemaker"
    assert "end of patch on 2026-01-29" in t.support_warning(old, today=t.TABLES_DATE)
    assert t.support_warning(old, today="2026-01-29") is None  # the EOP day itself is still supported
    # no newer PyTorch inference DLC exists: the serving image warns, and says how to avoid it
    assert "pass a supported image" in t.support_warning(t.inference_image("us-east-1", "ml.m5.xlarge"), today=t.TABLES_DATE)
    assert t.support_warning(t.builtin_od_image("us-east-1"), today=t.TABLES_DATE) is None  # not a DLC
    assert t.support_warning("123456789012.dkr.ecr.us-east-1.amazonaws.com/odorch-train:latest") is None


def test_builtin_od_image_in_ap_northeast_3_is_the_algorithm_account_not_the_dlc_one():
    assert t.builtin_od_image("ap-northeast-3") == "867004704886.dkr.ecr.ap-northeast-3.amazonaws.com/object-detection:1"
    assert t.training_image("ap-northeast-3", "ml.g5.xlarge").startswith("364406365360.")


def test_builtin_od_image_accounts():
    assert t.builtin_od_image("us-east-1") == "811284229777.dkr.ecr.us-east-1.amazonaws.com/object-detection:1"
    assert t.builtin_od_image("us-west-2") == "433757028032.dkr.ecr.us-west-2.amazonaws.com/object-detection:1"
    assert t.builtin_od_image("eu-west-1").startswith("685385470294.dkr.ecr.eu-west-1.")


def test_unknown_region_error_lists_known_and_says_how_to_override():
    for call in (lambda: t.training_image("xx-nowhere-1", "ml.m5.xlarge"), lambda: t.builtin_od_image("xx-nowhere-1")):
        with pytest.raises(t.UnknownRegionError) as err:
            call()
        msg = str(err.value)
        assert "xx-nowhere-1" in msg
        assert "us-east-1" in msg and "eu-west-1" in msg
        assert "image URI explicitly" in msg


def test_unlisted_gpu_family_still_gets_gpu_image_but_neuron_fails():
    assert "-gpu-" in t.training_image("us-east-1", "ml.g6e.xlarge")
    with pytest.raises(t.UnknownInstanceError):
        t.training_image("us-east-1", "ml.trn1.2xlarge")


def test_spot_is_cheaper_than_on_demand():
    for name in t.known_instances():
        assert 0 < t.price_per_hour(name, spot=True) < t.price_per_hour(name)
    assert t.price_per_hour("ml.p3.2xlarge", spot=True) == pytest.approx(
        t.price_per_hour("ml.p3.2xlarge") * t.SPOT_FACTOR["p3"]
    )


def test_estimate_cost_arithmetic():
    hourly = t.price_per_hour("ml.g4dn.xlarge")
    assert hourly == t.instance_info("g4dn.xlarge")["usd_per_hour"]
    assert t.estimate_cost("ml.g4dn.xlarge", 3600) == pytest.approx(hourly)
    assert t.estimate_cost("g4dn.xlarge", 1800, count=2) == pytest.approx(hourly)
    assert t.estimate_cost("ml.g4dn.xlarge", 0) == 0
    assert t.estimate_cost("ml.g4dn.xlarge", 7200, spot=True) == pytest.approx(
        2 * t.price_per_hour("ml.g4dn.xlarge", spot=True)
    )
    with pytest.raises(ValueError):
        t.estimate_cost("ml.g4dn.xlarge", -1)
    with pytest.raises(ValueError):
        t.estimate_cost("ml.g4dn.xlarge", 10, count=0)
    with pytest.raises(t.UnknownInstanceError):
        t.estimate_cost("ml.nope.xlarge", 10)
