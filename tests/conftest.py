"""Fixtures every test directory shares, and the ``slow`` marker.

``pytest -m "not slow"`` is the quick local run (demo, examples, torchrun and
multi-process jobs, the S3 server, SIGKILLed subprocesses, benchmarks, Ray, Dask, Spark,
Lightning, Accelerate, the tiny GPT and mypy are left out); CI runs everything with the
README's command. A test is slow when it is in a module of ``_SLOW_MODULES``, uses one of
``_SLOW_FIXTURES``, is named in ``_SLOW_TESTS`` (kept here, not as decorators, so that
other branches' test files stay untouched), or carries ``@pytest.mark.slow`` itself (the
marker is registered in pyproject.toml). The quick run also draws a fifth of each
property test's examples (tests/_budget.py); CI draws them all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import settings

import _budget

# modules whose every test starts something big: a framework, a cluster, a subprocess run
_SLOW_MODULES = {
    "test_dask.py",
    "test_demo.py",
    "test_distributed.py",
    "test_examples.py",
    "test_frameworks_accelerate.py",
    "test_frameworks_lightning.py",
    "test_interrupt.py",
    "test_loader_distributed.py",
    "test_peers_harness.py",
    "test_ray.py",
    "test_ray_train.py",
    "test_readme.py",
    "test_spark.py",
    "test_store_build_workers.py",
    "test_store_s3.py",
    "test_token_gpt.py",
    "test_types.py",
}
# fixtures that start a server: moto's S3 (tests/store/conftest.py)
_SLOW_FIXTURES = {"s3", "s3_proxy"}
# single tests of other modules that take several seconds on an idle 2-core machine (the
# longest of a `-m "not slow"` run): sweeps, exhaustive property checks, real processes
_SLOW_TESTS = {
    (
        "test_store_hardening.py",
        "test_every_single_bit_flip_in_shard_metadata_is_an_error_or_the_correct_data",
    ),
    (
        "test_store_hardening.py",
        "test_any_value_in_any_manifest_field_is_an_epochal_error_or_harmless",
    ),
    ("test_store_cli.py", "test_bad_input_and_corrupt_store_from_a_real_process"),
    ("test_loader.py", "test_exactly_once_property_with_resume"),
    ("test_loader.py", "test_save_and_resume_with_workers"),
    ("test_loader.py", "test_p6_reproduced_in_a_plain_dataloader"),
    ("test_cli.py", "test_train_usage_line_shows_its_config_argument"),
    ("test_order.py", "test_exact_bijection_for_every_small_n"),
    ("test_order.py", "test_exact_bijection_exhaustive_at_powers_of_two"),
    ("test_plan.py", "test_every_record_exactly_once_from_any_start"),
    ("test_windows.py", "test_scheduled_ranges_are_what_the_batches_then_read"),
    ("test_windows.py", "test_each_rank_reads_only_its_own_blocks"),
    ("test_windows.py", "test_resume_on_another_topology_is_exact_and_keeps_the_epoch_s_layout"),
    ("test_windows.py", "test_schedule_and_retire_come_from_the_main_process_ahead_of_the_batches"),
    ("test_windows.py", "test_schedules_cover_the_reads_of_a_resume_on_another_topology"),
    ("test_checkpoint.py", "test_pruning_keeps_the_newest_and_the_best"),
    ("test_token_windows.py", "test_resume_with_workers_at_some_batches"),
    ("test_mixture.py", "test_save_and_resume_at_every_batch_equals_uninterrupted"),
    # the longest of the quick run on a quiet 2-core machine after the merge (0.8-1.6 s each)
    ("test_images.py", "test_train_command_trains_from_an_image_folder_store"),
    ("test_store_cli.py", "test_every_bad_input_is_one_line_and_an_exit_code"),
    ("test_lint_corpus.py", "test_epochal_own_source_and_examples_are_clean"),
    ("test_store_record_blocks.py", "test_blocks_write_the_row_writers_store"),
    ("test_windows.py", "test_blocks_aligned_to_segments_keep_the_order_exact"),
    ("test_loader.py", "test_every_record_exactly_once_per_epoch_across_ranks"),
    ("test_cli_errors.py", "test_refused_command_is_one_line_and_changes_nothing"),
    ("test_order.py", "test_position_of_each_record_is_uniform_across_seeds"),
    ("test_loader_steps.py", "test_steps_with_workers_resume"),
    ("test_store_tokens.py", "test_store_column_windows_in_workers_and_after_resume"),
    ("test_train_config.py", "test_every_file_format_can_say_no_validation_set"),
    ("test_windows.py", "test_exact_bijection_for_every_layout"),
    ("test_rng.py", "test_streams_are_independent_of_neighbouring_records"),
    ("test_loader.py", "test_p6_cured_by_the_loader"),
    ("test_trainer.py", "test_async_and_sync_checkpointing_write_the_same_checkpoints"),
}


def _quick(config: pytest.Config) -> bool:
    return "not slow" in (config.option.markexpr or "")


def pytest_configure(config: pytest.Config) -> None:
    """Under ``-m "not slow"``, property tests draw fewer examples (before modules import).

    The suite runs the order's numpy path, the definition, in this process and in every
    subprocess it starts (numba's import would cost each of them a second or two);
    tests/test_order_kernel.py loads the compiled kernel and checks it gives the same bits.
    ``EPOCHAL_NO_NUMBA=0 pytest`` runs everything through the kernel instead.
    """
    os.environ.setdefault("EPOCHAL_NO_NUMBA", "1")
    if _quick(config):
        _budget.QUICK = True
        # for the property tests that do not set their own max_examples
        settings.register_profile("quick", max_examples=_budget.examples(100))
        settings.load_profile("quick")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m "not slow"``, modules whose every test is slow are not even imported
    (Lightning, Ray and Dask take seconds to import); their tests would be deselected."""
    if _quick(config) and collection_path.name in _SLOW_MODULES:
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        name = getattr(item, "originalname", item.name)  # without the parameters
        if (
            item.path.name in _SLOW_MODULES
            or fixtures & _SLOW_FIXTURES
            or (item.path.name, name) in _SLOW_TESTS
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
