"""Run a study: python -m study.run_sweep STUDY.yaml [--storage URI] [--address ADDR] [--set K=V ...]
[--dry-run] [--resume] [--verbose]

Starts (or joins) a Ray cluster, trains every trial of the study with Ray Tune (one-worker trials in
the Tune trial itself, multi-worker trials through a Ray Train TorchTrainer), writes Parquet results
and prints where they are. A user's mistake exits with status 2 and one line on stderr; Ctrl-C stops
and prints how to continue (exit 130; SIGTERM the same, exit 143).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from analysis.words import counted
from trainables.trial import Status  # names only (torch-free), as every status check reads them


def resume_command(argv: list[str]) -> str:
    """The command that continues this run: the same arguments with --resume."""
    args = [a for a in argv if a != "--resume"]
    return shlex.join(["python", "-m", "study.run_sweep", *args, "--resume"])


def summary_table(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) and value == value else "-"

    width = max([32, *(len(r["trial_id"]) for r in rows)])
    lines = [f"{'trial_id':<{width}} {'status':<10} {'epochs':>6} {'test_acc':>8} {'gap_acc':>8} {'startup_s':>9}"]
    for row in sorted(rows, key=lambda r: r["trial_id"]):
        lines.append(
            f"{row['trial_id']:<{width}} {row['status']:<10} {fmt(row['epochs_completed'], 'd'):>6} "
            f"{fmt(row['final_test_acc'], '.4f'):>8} {fmt(row['gap_acc'], '.4f'):>8} "
            f"{fmt(row['startup_s'], '.1f'):>9}"
        )
    return "\n".join(lines)


def nodes_line(rows: list[dict[str, Any]]) -> str:
    """Which nodes trained the trials: 'nodes: host-a (1a2b3c4d) 3 trials, host-b (5e6f7a8b) 1 trial'."""
    counts: dict[str, int] = {}
    for row in rows:
        node = row.get("node_id")
        name = f"{row.get('host') or '?'} ({node[:8]})" if isinstance(node, str) else str(row.get("host") or "?")
        counts[name] = counts.get(name, 0) + 1
    return "nodes: " + ", ".join(f"{n} {c} trial{'s' if c != 1 else ''}" for n, c in sorted(counts.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run_sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", help="the study file (YAML), for example studies/smoke.yaml")
    parser.add_argument("--storage", help="where results go (local path or s3://...); overrides the study's storage")
    parser.add_argument(
        "--address",
        help="join this Ray cluster; auto = the one running here (default: RAY_ADDRESS, else a fresh local one)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study-file key, YAML value syntax; repeat it for several keys: "
        "--set sweep.batch_size=[128,256] --set schedule.epochs=10",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan (one line per trial) and exit")
    parser.add_argument("--verbose", action="store_true", help="also show Ray Tune's own status tables")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study: finished trials are kept, unfinished ones resume "
        "from their last checkpoint",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The CLI (`python -m study.run_sweep` and the `lbstudy-sweep` script alike)."""
    status = run_command(list(sys.argv[1:] if argv is None else argv))
    if status in STOP_STATUS.values():  # stopped: no window in which another Ctrl-C could kill the process
        end_process(status)
    return status


def run_command(argv: list[str]) -> int:
    """Everything but the way the process ends; the exit status."""
    args = build_parser().parse_args(argv)  # --help answers here, before torch, pandas or ray load
    # Every continue-with line names the study file absolutely: it is run again from anywhere (study.status
    # prints the one the lock recorded).
    argv = [os.path.abspath(a) if a == args.study else a for a in argv]
    started = time.perf_counter()
    from study.config import ConfigError, load_study
    from study.plan import check_against_plan, format_plan, plan_study

    try:
        study = load_study(args.study, args.set)
        trials = plan_study(study)
        check_against_plan(study, trials, args.study)
    except ConfigError as error:
        return user_error(error)
    if args.storage:
        study = dataclasses.replace(study, storage=args.storage)
    if args.dry_run:  # the plan needs neither pandas nor ray
        print(format_plan(study, trials))
        return 0
    from study.checks import (
        SweepError,
        check_data_fingerprint,
        check_fresh,
        check_storage,
        folders_to_create,
        nothing_left,
        record_identity,
        remove_created,
        study_root,
    )
    from study.lock import StudyLocked, forget, study_lock

    exit_at_once_on_ctrl_c(argv)  # for the rest of this process, its exit included
    sigterm_as_ctrl_c()
    created = folders_to_create(study)  # removed again if a check fails before anything is written
    try:
        check_storage(study)
        check_fresh(study, args.resume)
        done = nothing_left(study, trials) if args.resume else None
    except SweepError as error:  # said before torch and Ray load
        remove_created(created)
        return user_error(error)
    if done:  # answered from the store, in a second: no Ray started to find it out
        print(done, flush=True)
        from study.tracking import catch_up_study

        try:  # every tracker brought up to the store first (one that was down while the study ran)
            with study_lock(study_root(study), resume_command(argv)):
                lines = catch_up_study(study)
        except StudyLocked as error:
            return user_error(error)
        return print_tracking(lines, argv)
    # torch and Ray take seconds to import on a busy machine: say what is coming first
    print(f"{study.name}: {counted(len(trials), 'trial')}; checking the data, then starting Ray", flush=True)
    from study.cluster import connect_ray
    from study.sweep import check_data, run_study
    from trainables.data import DataError

    try:
        with contextlib.ExitStack() as held:
            # One driver per study; the lock also tells study.status that it runs, and how to continue it.
            took_over = held.enter_context(study_lock(study_root(study), resume_command(argv)))
            if took_over:
                print(f"note: {took_over}", flush=True)
            fingerprint = check_data(study)
            check_data_fingerprint(study, fingerprint)
            record_identity(study, fingerprint)  # what a later --resume is checked against
            dashboard = connect_ray(args.address, verbose=args.verbose)
            sigterm_as_ctrl_c()  # ours again, over Ray's
            if dashboard:
                print(dashboard_line(dashboard), flush=True)
            result = run_study(study, resume=args.resume, dashboard_url=dashboard, verbose=args.verbose)
    except (ConfigError, SweepError, DataError, StudyLocked) as error:
        if not isinstance(error, StudyLocked):  # its own announcement, not another driver's
            forget(study_root(study))
        remove_created(created)  # only folders this run made and left empty: a failed check leaves no trace
        return user_error(error)
    except Exception as error:  # a full disk anywhere in the driver's writing: one line, and how to go on
        from analysis.remote import unreachable

        gone = unreachable(error)
        if gone is not None:  # an outage longer than the retries: one line, and how to go on
            print(f"error: {gone}; once it answers, continue with: {resume_command(argv)}", file=sys.stderr)
            return 1
        if not storage_full(error):
            raise
        return user_error(
            f"storage: {study_root(study)} is full ({str(error).splitlines()[0][:120]}); free space there, "
            f"then continue with: {resume_command(argv)}"
        )
    if result.interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the study is already stopping
        print(
            f"\nstopped: {counted(len(result.unfinished), 'trial')} unfinished "
            f"({', '.join(result.unfinished) or '-'}); "
            f"no measurements or report. Continue with: {resume_command(argv)}",
            file=sys.stderr,
        )
        return stop_status()
    summary = [
        summary_table(result.trials),
        nodes_line(result.trials),
        f"wall time: {time.perf_counter() - started:.0f} s",
        f"results: {result.results_dir}",
    ]
    if result.report:
        summary.append(f"report: {result.report}")
        if "://" in result.report:  # in the bucket: how to have it here
            summary.append(f"fetch it: python -m analysis.report {result.results_dir} -o {study.name}-report.html")
    print("\n".join(summary))
    # Kept beside the results: a job's console (`ray job submit`) is gone with its driver.
    from analysis.store import join, write_atomic

    summary_file = join(study_root(study), "summary.txt")
    with contextlib.suppress(OSError):
        write_atomic(summary_file, ("\n".join(summary) + "\n").encode())
        print(f"summary: {summary_file}")
    if dashboard and (args.address or os.environ.get("RAY_ADDRESS")):  # a joined cluster outlives this run
        print(dashboard_line(dashboard))
    print_tracking(result.tracking, argv)
    full = [t for t in result.trials if str(t["error"] or "").startswith("storage full")]
    if full:  # the one cause of every such failure, said once
        reason = str(full[0]["error"]).removeprefix("storage full").strip(" ()")
        return user_error(
            f"storage: {study_root(study)} is full ({reason[:120]}); {counted(len(full), 'trial')} could not "
            "write their "
            f"results: free space there, then continue with: {resume_command(argv)}"
        )
    for line in what_went_wrong(result.trials, argv):
        print(line)
    return exit_status(result.trials)


def print_tracking(lines: Sequence[str], argv: list[str]) -> int:
    """What each tracker was sent; where one was dropped, the command that sends it what it lacks."""
    for line in lines:
        print(line)
    if any(line.endswith("was dropped: it lacks what came after") for line in lines):
        print(f"once it is reachable, send it what it lacks with: {resume_command(argv)}")
    return 0


def storage_full(error: BaseException) -> bool:
    """A full disk, raised directly or wrapped by Ray Tune (a callback's error, a trial's)."""
    from analysis.store import disk_full

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if disk_full(error) or "storage full" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def user_error(error: Exception | str) -> int:
    """A mistake the user can fix: its one line on stderr, exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return 2


STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report a stopped job
_stopped_by = signal.SIGINT


def stop_status() -> int:
    """The exit status of a stopped study: 130 after Ctrl-C, 143 after SIGTERM."""
    return STOP_STATUS[_stopped_by]


def sigterm_as_ctrl_c() -> None:
    """SIGTERM (`docker stop`, a batch scheduler, `kill`) stops the study as Ctrl-C does: trials stopped,
    the resume command printed, exit 143. Installed again once Ray is connected: ray.init puts in its own
    (sys.exit), and Ray's core worker one that dumps a stack trace."""

    def on_term(signum: int, frame: Any) -> None:
        global _stopped_by
        _stopped_by = signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # whoever handles Ctrl-C now (Tune, or exit_now) does the rest

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def exit_at_once_on_ctrl_c(argv: list[str]) -> None:
    """Ctrl-C outside training (checks, start-up, measurements), or a second one during it (Tune takes
    the first and stops cleanly): say how to continue and end the process with 130 (143 after SIGTERM)
    now. Ended from the handler, not by raising KeyboardInterrupt, because Ray's clean-up code may be
    running a finalizer when the signal lands, and a finalizer swallows the exception and prints a traceback instead of
    stopping. Every row and checkpoint on disk was written atomically, so --resume continues from
    them; the study lock left behind is taken over by the next run (its pid is gone)."""

    def exit_now(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a third Ctrl-C cannot cut the message short
        print(f"\nstopped; continue with: {resume_command(argv)}", file=sys.stderr, flush=True)
        end_process(stop_status())

    if threading.current_thread() is threading.main_thread():  # signals belong to the main thread
        signal.signal(signal.SIGINT, exit_now)


def end_process(code: int) -> NoReturn:
    """Shut Ray down (a local instance this process started would otherwise leave its agents running),
    within 10 s, then exit without Python's own finalization: it resets SIGINT to the default, so a
    Ctrl-C landing there would kill the process (status -2) instead of ending it with `code`."""
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(code))  # impatient: now
    threading.Timer(10.0, os._exit, (code,)).start()
    sys.stdout.flush()
    sys.stderr.flush()
    from study.lock import release_held

    release_held()  # study.status then says the study stopped (not that its driver died)
    ray = sys.modules.get("ray")
    with contextlib.suppress(Exception):
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    os._exit(code)


def dashboard_line(url: str) -> str:
    """Where the dashboard is, and, where Ray's token authentication is on (a local Ray's default), that
    the page asks for the token; a cluster started without it (as `ray up` does) asks nothing."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        return f"Ray dashboard: {url}"
    return f"Ray dashboard: {url} (it asks for Ray's token: run `ray get-auth-token` to print it)"


def what_went_wrong(trials: list[dict[str, Any]], argv: list[str]) -> list[str]:
    """The last lines of a run where trials failed or diverged: each with its first error line, and how to
    retry the failed ones (diverged trials are results: --resume does not train them again)."""
    bad = [t for t in sorted(trials, key=lambda t: t["trial_id"]) if t["status"] in (Status.FAILED, Status.DIVERGED)]
    lines = [f"{len(bad)} of {len(trials)} trials did not complete:"] if bad else []
    for trial in bad:
        first = str(trial["error"] or "no error recorded").strip().splitlines()[0]
        lines.append(f"  {trial['trial_id']} {trial['status']}: {first}")
    if any(t["status"] == Status.FAILED for t in bad):
        lines.append(f"retry the failed ones with: {resume_command(argv)}")
    return lines


def exit_status(trials: list[dict[str, Any]]) -> int:
    """0, or 1 when no trial completed: every one failed or diverged (in any mix; said on stderr). A study
    whose trials all diverged has results (where training blew up), but none of what it was run for."""
    if trials and not any(row["status"] == Status.COMPLETED for row in trials):
        counts = {s: sum(row["status"] == s for row in trials) for s in sorted({row["status"] for row in trials})}
        said = ", ".join(f"{n} {s}" for s, n in counts.items())
        first = str(trials[0]["error"] or "no error recorded").strip().splitlines()[0]
        print(f"error: no trial completed ({said}); the first said: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
