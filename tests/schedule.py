"""The order the suite runs in: the long tests first on every xdist worker, short ones after.

`make test` runs `pytest -n 2 --dist worksteal`. Worksteal hands each worker a contiguous
slice of the collection (the first half, the second half), and a worker that runs dry takes
the far end of the other's queue. In file order the long tests (server processes killed and
restarted, browsers, the schemathesis run) sit wherever their modules are, and whichever
worker drew the last of them finishes minutes after the other. So the long ones go to the
front of the slices, spread so each slice gets about the same seconds (longest first, each to
the lightest slice), and the rest follow in file order: the tails are short tests, which is
what stealing evens out best.

Only the order changes: every test runs, with the same fixtures. A module whose tests share a
module-scoped fixture moves as one block (WHOLE_MODULES). SECONDS are rough figures from
`--durations` on a 2-core machine (setup + call + teardown): a stale figure only makes the
balance a little worse, never a test weaker.

Left out on purpose: `test_memory.py::test_non_reading_sockets_stay_bounded_and_memory_returns`.
It reads the server's RSS, and at the front, beside the heaviest tests of the other worker, the
first wave left +52 MiB against its bound of 48 (+28 to +33 where it runs in file order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

# test (node id without its parameters) -> seconds each; measured with `--durations=120`
SECONDS: dict[str, float] = {
    "tests/reliability/test_fuzz.py::test_schemathesis_finds_no_5xx_and_no_schema_drift": 37,
    "tests/cluster/test_cluster.py::test_a_backend_killed_mid_run_loses_nothing": 26,
    "tests/reliability/test_attack_durability.py::"
    "test_redis_kill_9_of_a_process_jobs_taken_over_no_duplicate_attempts": 18,
    "tests/reliability/test_memory.py::test_a_stalled_sse_slow_consumer_is_cut": 16,
    "tests/browser/test_dashboard.py::test_stays_responsive_with_5000_jobs": 14,
    "tests/integration/test_store_failure.py::test_redis_stopped_refuses_changes_then_recovers": 12,
    "tests/browser/test_layout.py::test_screenshot": 11,
    "tests/browser/test_layout.py::test_table_fits_phone_390x844": 10,
    "tests/browser/test_layout.py::test_table_fits_1280x800": 10,
    "tests/reliability/test_chaos.py::test_waits_survive_server_side_socket_chaos": 9,
    "tests/reliability/test_redis_stall_recovery.py::"
    "test_after_a_redis_stall_both_processes_recover_by_themselves": 9,
    "tests/reliability/test_restart.py::test_kill_9_loses_nothing_and_every_wait_ends_right": 9,
    "tests/reliability/test_attack_durability.py::test_sqlite_acks_under_load_survive_random_kill_9": 8,
    "tests/reliability/test_attack_durability.py::"
    "test_redis_process_while_redis_stopped_answers_503": 8,
    "tests/reliability/test_attack_durability.py::"
    "test_sqlite_seen_events_are_never_rolled_back_across_kill_9": 8,
    "tests/integration/test_streams.py::test_ws_two_hundred_jobs_over_one_socket": 8,
    "tests/reliability/test_attack_durability.py::test_redis_refused_change_is_not_applied_later": 7,
    "tests/reliability/test_attack_durability.py::"
    "test_redis_resume_after_full_restart_gets_exactly_the_missed_events": 7,
    "tests/browser/test_media_dashboard.py::test_a_media_job_shows_its_stage_then_plays": 7,
    "tests/reliability/test_attack_durability.py::"
    "test_resume_after_kill_9_gets_exactly_the_missed_events": 6,
    "tests/integration/test_client_cli.py::test_jobs_config_and_usage": 6,
    "tests/integration/test_api.py::test_stuck_stays_processing_until_cancelled": 5,
    "tests/integration/test_client_cli.py::test_wait_failed_and_cancelled_exit_1": 5,
    "tests/integration/test_client_cli.py::test_jobs_at_80_columns_prints_ids_whole": 5,
    "tests/integration/test_store_failure.py::test_sqlite_locked_refuses_changes_then_recovers": 5,
    "tests/integration/test_legacy.py::test_jobs_are_grouped_by_old_status_then_role": 5,
    "tests/reliability/test_attack_durability.py::"
    "test_sqlite_locked_db_answers_503_and_changes_nothing": 5,
    "tests/reliability/test_attack_durability.py::test_sqlite_each_acked_change_survives_kill_9": 5,
    "tests/integration/test_keys_cli.py::test_cli_keys_round_trip": 4,
    "tests/reliability/test_attack_heygen.py::"
    "test_at_most_100_endpoints_per_owner_made_at_once_on_two_processes": 4,
    "tests/reliability/test_attack_durability.py::"
    "test_redis_racing_cancels_on_two_processes_move_each_job_once": 4,
    "tests/browser/test_dashboard.py::test_job_submitted_from_page_progresses_to_completed": 4,
    "tests/reliability/test_attack_streams.py::"
    "test_sigterm_with_redis_hung_and_a_request_on_it_exits_within_the_grace": 4,
    "tests/media/test_media_faults.py::test_kill_9_mid_mix_restarts_the_attempt_after_restart": 4,
    "tests/integration/test_webhooks_durability.py::test_redis_two_processes_deliver_each_event_once": 4,
    "tests/browser/test_dashboard.py::test_cancel_from_page_shows_reason": 4,
    "tests/browser/test_dashboard.py::test_reconnects_after_restart_and_shows_what_finished_meanwhile": 3,
    "tests/browser/test_dashboard.py::test_admin_view_survives_restart": 3,
    "tests/browser/test_dashboard.py::test_retry_and_conflict_errors_are_inline": 3,
    "tests/browser/test_dashboard.py::test_rest_job_appears_live_and_counts_update": 3,
    "tests/browser/test_csrf.py::test_cross_origin_pages_cannot_use_the_admin_cookie": 3,
    "tests/reliability/test_attack_streams.py::"
    "test_redis_resume_on_a_process_that_lags_a_moment_is_no_reset": 3,
    "tests/reliability/test_attack_streams.py::"
    "test_redis_a_process_that_fell_behind_the_trimmed_log_misses_nothing_silently": 3,
    "tests/integration/test_streams.py::test_polling_at_the_hint_follows_the_eta_to_the_outcome": 3,
    "tests/integration/test_streams.py::test_a_processing_jobs_hint_points_just_past_its_eta": 3,
    "tests/unit/test_store.py::test_a_locked_database_fails_the_commit_loudly_and_recovers": 3,
    "tests/cluster/test_cluster.py::test_a_video_upload_passes_the_proxy": 3,
    "tests/cluster/test_cluster.py::test_ws_and_sse_through_nginx": 2,
    "tests/cluster/test_cluster.py::test_one_service_whichever_process_answers": 2,
    "tests/reliability/test_attack_durability.py::"
    "test_sqlite_full_disk_answers_503_changes_nothing_and_recovers": 3,
    "tests/integration/test_shutdown.py::test_sigterm_ends_every_open_request_with_its_goodbye": 3,
    "tests/reliability/test_state_machine_hypothesis.py::TestJobServiceStateMachine::runTest": 3,
}
# modules whose tests share a module-scoped fixture: moved as one block, seconds for the block
WHOLE_MODULES: dict[str, float] = {
    "tests/integration/test_wheel.py": 13,
}


def seconds(item: pytest.Item) -> float:
    return SECONDS.get(item.nodeid.split("[", 1)[0], 0.0)


def slice_sizes(count: int, workers: int) -> list[int]:
    """How xdist's worksteal first splits `count` tests over `workers` idle workers."""
    sizes = []
    for i in range(workers):
        size = count // (workers - i)
        sizes.append(size)
        count -= size
    return sizes


def arrange(items: Sequence[pytest.Item], workers: int) -> list[pytest.Item]:
    """The long tests (or blocks) at the front of each worker's slice, the slices' seconds
    about even; every other test after them, in collection order."""
    blocks: list[list[pytest.Item]] = []
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module in WHOLE_MODULES:
            if module not in by_module:
                by_module[module] = []
                blocks.append(by_module[module])
            by_module[module].append(item)
        else:
            blocks.append([item])

    def cost(block: list[pytest.Item]) -> float:
        module = block[0].nodeid.split("::", 1)[0]
        return WHOLE_MODULES.get(module, 0.0) + sum(seconds(i) for i in block)

    long = sorted((b for b in blocks if cost(b) > 0), key=cost, reverse=True)  # stable
    short = [item for b in blocks if cost(b) == 0 for item in b]
    sizes = slice_sizes(len(items), max(workers, 1))
    fronts: list[list[pytest.Item]] = [[] for _ in sizes]
    loads = [0.0 for _ in sizes]
    for block in long:
        room = [i for i, size in enumerate(sizes) if len(fronts[i]) + len(block) <= size]
        target = min(room or range(len(sizes)), key=lambda i: loads[i])
        fronts[target] += block
        loads[target] += cost(block)
    ordered: list[pytest.Item] = []
    rest = iter(short)
    for front, size in zip(fronts, sizes, strict=True):
        ordered += front
        ordered += [item for _, item in zip(range(size - len(front)), rest, strict=False)]
    ordered += list(rest)  # only when a block overfilled its slice
    assert sorted(map(id, ordered)) == sorted(map(id, items)), "a test lost or doubled"
    return ordered


def xdist_workers() -> int:
    """The number of workers when this runs in an xdist worker, else 1."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
