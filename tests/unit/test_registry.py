"""The registry's pure parts: references, the compute estimate, the model card."""

from __future__ import annotations

import pytest

from fabbrica.core.errors import InvalidInput
from fabbrica.core.registry import (
    DatasetRead,
    Lineage,
    ModelRef,
    compute_estimate,
    compute_text,
    model_card,
    parse_model_ref,
)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("digits@1", ModelRef("digits", version=1)),
        ("digits@champion", ModelRef("digits", alias="champion")),
        ("llm-7b.v2", ModelRef("llm-7b.v2")),
    ],
)
def test_model_references(text: str, ref: ModelRef) -> None:
    assert parse_model_ref(text) == ref


@pytest.mark.parametrize("text", ["", "@1", "a b@1", "digits@0", "digits@latest", "d@v3",
                                  "d@-x", "x" * 129])  # fmt: skip
def test_bad_references_name_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_model_ref(text, field="model")
    assert caught.value.field == "model"


def test_the_compute_estimate_is_gpu_hours_times_peak() -> None:
    assert compute_estimate(2.0, 989e12) == pytest.approx(2.0 * 3600 * 989e12)
    assert compute_estimate(None, 989e12) is None
    assert compute_estimate(2.0, None) is None


LINEAGE = Lineage(
    name="digits", version=1, project="P-1", source="mlflow-artifacts:/1/r/artifacts/model",
    run_id="r", created_at="2026-12-01T00:00:00+00:00", job=7, job_name="digits-classifier",
    job_state="succeeded", workdir_sha256="ab" * 32, factory="it4lia", gpu_model="a100",
    gpus=2, gpu_hours=1.5, peak_flops=312e12, compute_flop=1.5 * 3600 * 312e12,
    datasets=(DatasetRead("digits", 3, 2, 58000, "CC-BY-4.0", "IT", "internal", ""),),
    metrics={"accuracy": 0.9711}, params={"epochs": "200"}, aliases=("champion",),
)  # fmt: skip


def test_the_card_states_the_facts_and_the_fields_to_complete() -> None:
    card = model_card(LINEAGE)
    for fact in ("# Model card: digits@1", "Training job: 7 (digits-classifier, succeeded)",
                 "Factory: it4lia", "GPU model: a100, 2 GPU(s)", "GPU-hours charged: 1.5",
                 "| digits | 3 | 2 | 58000 | CC-BY-4.0 | IT | internal |", "- accuracy: 0.9711",
                 "- epochs: 200", "about 1.685e+18 FLOP (estimate", "aliases: champion",
                 "Intended use: to be completed", "Limitations and known risks",
                 "Training data summary: digits@3"):  # fmt: skip
        assert fact in card, (fact, card)


def test_without_a_peak_figure_or_hours_the_compute_is_unknown() -> None:
    from dataclasses import replace

    assert compute_text(replace(LINEAGE, peak_flops=None, compute_flop=None)).startswith(
        "unknown (the catalog states no peak FLOP/s for GPU model a100)"
    )
    bare = replace(LINEAGE, job=None, gpu_hours=None, peak_flops=None, compute_flop=None,
                   datasets=())  # fmt: skip
    assert "unknown (no GPU-hours charged yet)" in model_card(bare)
    assert "No Fabbrica data set recorded" in model_card(bare)
