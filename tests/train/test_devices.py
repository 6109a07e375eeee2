"""--device is read by one function for training and inference alike."""

import pytest
import torch
from nsa.evaluate import inference
from nsa.train import trainer
from nsa.train.devices import resolve_device

from nsa.errors import UserError


def test_training_and_inference_read_devices_alike():
    assert trainer.resolve_device is resolve_device is inference.resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_user_error(name):
    with pytest.raises(UserError, match=f"--device {name}: CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_number_the_machine_lacks_is_a_user_error():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UserError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x", "cpu:3", ""])
def test_other_names_are_refused_naming_the_choices(name):
    with pytest.raises(UserError, match="choose auto, cpu, cuda or cuda:N"):
        resolve_device(name)
