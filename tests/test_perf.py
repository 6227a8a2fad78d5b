"""The performance pieces that are checkable anywhere, and the CUDA fast path where CUDA is present."""

import dataclasses

import pytest
import torch

from trainables.flops import forward_flops_per_image, mfu, peak_flops
from trainables.loop import Runtime, TrialSpec, build_model_and_optimizer, compiled, train
from trainables.models import vgg9

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = TrialSpec("perf", dataset="synthetic", train_subset=512, test_subset=256, width=0.25, batch_size=128,
                 micro_batch=128, epochs=1, train_eval_samples=256)


def test_vgg9_forward_flops_match_the_hand_count() -> None:
    # convs at 32x32: 3->64, 64->64; at 16x16: 64->128, 128->128; at 8x8: 128->256, 256->256 x2; two linears
    by_hand = 2 * 9 * (3 * 64 * 1024 + 64 * 64 * 1024 + 64 * 128 * 256 + 128 * 128 * 256 + 128 * 256 * 64
                       + 2 * 256 * 256 * 64) + 2 * (4096 * 256 + 256 * 10)
    assert forward_flops_per_image(vgg9()) == by_hand == 383_128_576  # the 0.383 GFLOP


def test_peak_table_and_mfu() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A10G") == 70e12 and peak_flops("Some Future GPU") is None
    assert mfu(100_000, 383e6, 989e12) == pytest.approx(100_000 * 3 * 383e6 / 989e12)
    assert mfu(100_000, 383e6, None) is None


def test_cpu_run_records_no_mfu_and_does_not_compile() -> None:
    rows: list[dict] = []
    train(TINY, Runtime(torch.device("cpu")), on_epoch=lambda m, _: rows.append(m))
    assert rows[-1]["mfu"] is None
    model, _ = build_model_and_optimizer(TINY, 10, torch.device("cpu"))
    assert compiled(model, TINY, torch.device("cpu")) is model


def test_compile_switch_is_honoured_on_cpu() -> None:
    spec = dataclasses.replace(TINY, compile=True)
    model, _ = build_model_and_optimizer(spec, 10, torch.device("cpu"))
    assert compiled(model, spec, torch.device("cpu")) is not model


@CUDA
def test_cuda_fast_path_trains_with_bf16_channels_last_fused_sgd_and_compile() -> None:
    device = torch.device("cuda")
    model, optimizer = build_model_and_optimizer(TINY, 10, device)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert optimizer.defaults["fused"] and torch.backends.cudnn.benchmark
    rows: list[dict] = []
    outcome = train(dataclasses.replace(TINY, epochs=2), Runtime(device), on_epoch=lambda m, _: rows.append(m))
    assert outcome.status == "completed" and rows[-1]["test_acc"] > 0.3
    if peak_flops(torch.cuda.get_device_name()) is not None:
        assert 0 < rows[-1]["mfu"] < 1
