"""The hours and cost of a training run, from the figures of arcface_torch's configs and the reports."""

from __future__ import annotations

import pytest

from bench.report.training_runs import DATASETS, TrainingRun, find_dataset


def test_the_configs_datasets_with_their_images_classes_and_epochs():
    table = {d.name: (d.num_image, d.num_classes, d.num_epoch) for d in DATASETS.values()}
    assert table == {
        "MS1MV2": (5_822_653, 85_742, 20),
        "MS1MV3": (5_179_510, 93_431, 20),
        "Glint360K": (17_091_657, 360_232, 20),
        "WebFace4M": (4_235_242, 205_990, 20),
        "WebFace12M": (12_720_066, 617_970, 20),
        "WebFace42M": (42_474_557, 2_059_906, 20),
    }


def test_a_name_is_found_in_any_case_and_an_unknown_one_lists_the_known():
    assert find_dataset("webface42m").name == "WebFace42M"
    assert find_dataset(" Glint360K ").num_classes == 360_232
    with pytest.raises(ValueError, match=r"no dataset named 'webface40m'; the datasets are MS1MV2, .*WebFace42M"):
        find_dataset("webface40m")


def test_webface42m_for_20_epochs_at_the_a100_reports_r100_speed():
    # The A100 report's IResNet-100 on 2M classes, 8 GPUs: ~3480 samples/sec.
    run = TrainingRun.of(find_dataset("webface42m"))
    assert run.epochs == 20 and run.samples == 849_491_140
    assert run.hours(3480) == pytest.approx(849_491_140 / 3480 / 3600)
    assert round(run.hours(3480), 1) == 67.8


def test_the_rtx3080_reports_speed_is_a_much_longer_run():
    # The RTX 3080 report's best 2M-class row, IResNet-50 fp16 + Partial FC at batch 1024: ~3800.
    run = TrainingRun.of(find_dataset("WebFace42M"))
    assert round(run.hours(3800)) == 62
    assert round(TrainingRun.of(find_dataset("WebFace42M"), epochs=1).hours(3800), 2) == 3.10


def test_images_and_epochs_given_directly():
    run = TrainingRun(images=1_000_000, epochs=10)
    assert run.hours(1000) == pytest.approx(10_000 / 3600)


def test_cost_is_hours_times_gpus_times_the_price():
    run = TrainingRun.of(find_dataset("ms1mv3"))  # 5,179,510 images x 20
    hours = run.hours(5400)
    assert run.cost(5400, gpus=8, gpu_hour_price=2.5) == pytest.approx(hours * 8 * 2.5)
    assert round(run.cost(5400, gpus=8, gpu_hour_price=2.5), 2) == 106.57
    assert run.cost(5400, gpus=8, gpu_hour_price=0) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: TrainingRun(images=0, epochs=20), "images must be a whole number of at least 1, not 0"),
        (lambda: TrainingRun(images=10, epochs=2.5), "epochs must be a whole number of at least 1, not 2.5"),
        (lambda: TrainingRun(images=10, epochs=1).hours(0), "samples/sec must be a positive number, not 0"),
        (lambda: TrainingRun(images=10, epochs=1).hours(float("nan")), "samples/sec must be a positive number"),
        (lambda: TrainingRun(images=10, epochs=1).cost(10, 0, 1.0), "GPUs must be a whole number of at least 1"),
        (lambda: TrainingRun(images=10, epochs=1).cost(10, 8, -1), "the price of a GPU-hour must be a number of at"),
    ],
)
def test_bad_figures_are_refused_in_one_line(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call()
