#!/usr/bin/env python3
"""Dovecote side by side with Apache ActiveMQ 5.17, on this machine, with one load generator.

    python3 benchmarks/side_by_side.py                      all seven scenarios, 3 runs each
    python3 benchmarks/side_by_side.py queue latency --repeat 5
    python3 benchmarks/side_by_side.py --only activemq      one side alone
    python3 benchmarks/side_by_side.py idle -- --connections 1000   (after --: bench options)

Starts ActiveMQ with ``<peers>/activemq.sh`` (which installs it on first use) and Dovecote as
a subprocess (``--dovecote-cmd`` to override), each on free loopback ports picked by binding
port 0. Per scenario it first makes discarded runs on each broker until two in a row agree
within ``--warmup-spread`` (at most ``--warmup-runs``: ActiveMQ's JIT compiles queue, topic
and persistence paths separately and needs a few hundred thousand messages), then runs it
``--repeat`` times per broker, alternating brokers so that drift on a shared machine hits
both alike, and prints a Markdown table of the medians. ``idle`` runs on a freshly started
broker each time (connections closed by an earlier run leave ActiveMQ with thousands of
threads for minutes).

The load generator runs as the top-level package ``bench`` (PYTHONPATH=src/dovecote), so
its processes never import the broker. Before each run the script waits (up to
``--quiet-wait`` seconds) until processes other than the brokers use less than
``--busy-limit`` of the CPUs, and reports runs it had to start on a busy machine.

Both brokers are stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "queue", "fanout", "latency", "idle", "persistent", "selectors", "priority", "acked",
)  # fmt: skip
# Measured on a freshly started broker each time: what an earlier run left behind (pooled
# threads, a heap already resident) would otherwise be counted, or hidden.
FRESH_BROKER = frozenset({"idle"})
BENCH_TIMEOUT = 900.0  # seconds; the bench has its own, shorter, timeouts on every wait
START_TIMEOUT = 60.0

# (scenario, JSON key, row label, True when higher is better)
METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("queue", "msg_per_s", "queue 1P/1C non-persistent, msg/s", True),
    ("fanout", "deliveries_per_s", "topic fan-out 1 -> 10, deliveries/s", True),
    ("latency", "p50_ms", "latency p50 at 2,000 msg/s, ms", False),
    ("latency", "p99_ms", "latency p99 at 2,000 msg/s, ms", False),
    ("idle", "kib_per_connection", "RSS per idle connection, KiB", False),
    ("idle", "threads_per_connection", "threads per idle connection", False),
    ("persistent", "msg_per_s", "persistent, receipt per send, msg/s", True),
    ("selectors", "msg_per_s", "queue 1P/10C, disjoint selectors, msg/s", True),
    ("priority", "msg_per_s", "queue 1P/1C, priorities 0-9 mixed, msg/s", True),
    ("acked", "msg_per_s", "queue 1P/1C, client-individual ACK per message, msg/s", True),
)


class SideBySideError(Exception):
    """A broker could not be started or stopped; the message says what to look at."""


@dataclass(frozen=True, slots=True)
class Broker:
    """A running broker under test."""

    name: str
    port: int
    pid: int


Record = dict[str, object]  # one bench JSON line
Results = dict[str, dict[str, list[Record]]]  # broker name -> scenario -> runs


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the kernel just handed out (bound together)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(port: int, timeout: float, is_alive: Callable[[], bool]) -> None:
    """Until 127.0.0.1:port accepts; ``is_alive`` says whether the broker process still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive():
            raise SideBySideError("the broker exited while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.2)
        else:
            return
    raise SideBySideError(f"nothing accepted connections on port {port} within {timeout:.0f} s")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def activemq(peers: Path, keep: bool) -> Iterator[Broker]:
    """ActiveMQ started with ``peers/activemq.sh`` in a fresh directory; stopped on exit."""
    script = peers / "activemq.sh"
    if not script.is_file():
        raise SideBySideError(f"{script} not found (use --peers DIR)")
    workdir = Path(tempfile.mkdtemp(prefix="dovecote-bench-activemq-"))
    stomp, mqtt, openwire = free_ports(3)
    print(f"starting ActiveMQ in {workdir} (STOMP port {stomp}) ...", flush=True)
    try:
        started = subprocess.run(
            ["sh", str(script), "start", str(workdir), str(stomp), str(mqtt), str(openwire)],
            capture_output=True,
            text=True,
            timeout=900,  # the first start installs the Debian package
            check=False,
        )
        if started.returncode != 0:
            raise SideBySideError(
                f"activemq.sh start failed ({started.returncode}): {started.stderr.strip()}\n"
                + tail(workdir / "data" / "console.log")
            )
        pid = int(started.stdout.split()[-1])
        yield Broker("ActiveMQ", stomp, pid)
    finally:
        subprocess.run(["sh", str(script), "stop", str(workdir)], timeout=60, check=False)
        pid_file = workdir / "pid"
        if pid_file.is_file():
            _wait_gone(int(pid_file.read_text().split()[0]), "ActiveMQ")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_gone(pid: int, name: str) -> None:
    deadline = time.monotonic() + 30
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_running(pid):
        print(f"{name} (pid {pid}) did not stop in 30 s: killing it", flush=True)
        os.kill(pid, signal.SIGKILL)


def dovecote_command(template: str | None, port: int, data_dir: Path) -> list[str]:
    """The command that starts Dovecote listening on ``port`` with state in ``data_dir``."""
    if template is not None:
        fields = {"port": port, "data_dir": data_dir, "repo": REPO, "python": sys.executable}
        return shlex.split(template.format(**fields))
    venv_python = REPO / ".venv" / "bin" / "python"
    listen = ["--listen", f"stomp://127.0.0.1:{port}", "--data-dir", str(data_dir)]
    if venv_python.is_file():
        return [str(venv_python), "-m", "dovecote", "run", *listen]
    return [str(REPO / "bin" / "dovecote"), "run", *listen]  # prepares .venv, then execs


@contextmanager
def dovecote(template: str | None, keep: bool) -> Iterator[Broker]:
    """Dovecote as a subprocess on a free port, with a fresh data directory; ended on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="dovecote-bench-dovecote-"))
    (port,) = free_ports(1)
    command = dovecote_command(template, port, workdir / "data")
    log_path = workdir / "broker.log"
    print(f"starting Dovecote: {shlex.join(command)}", flush=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
        )
    try:
        try:
            wait_for_port(port, START_TIMEOUT, lambda: process.poll() is None)
        except SideBySideError as exc:
            raise SideBySideError(f"Dovecote did not start: {exc}\n{tail(log_path)}") from None
        yield Broker("Dovecote", port, process.pid)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print("Dovecote did not stop in 15 s: killing it", flush=True)
                process.kill()
                process.wait(timeout=15)
        if keep:
            print(f"Dovecote log: {log_path}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _cpu_ticks(pids: Sequence[int]) -> tuple[int, int]:
    """(busy ticks of the whole machine minus those of ``pids``, all ticks) so far."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    own = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            own += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            continue
    return total - idle - own, total


def busy_fraction(pids: Sequence[int], seconds: float = 0.5) -> float:
    """Share of all CPUs used by processes other than ``pids`` over ``seconds``."""
    busy0, total0 = _cpu_ticks(pids)
    time.sleep(seconds)
    busy1, total1 = _cpu_ticks(pids)
    return max(0, busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(pids: Sequence[int], limit: float, patience: float) -> float:
    """Wait up to ``patience`` s for other processes to use < ``limit`` of the CPUs."""
    deadline = time.monotonic() + patience
    busy = busy_fraction(pids)
    while busy >= limit and time.monotonic() < deadline:
        busy = busy_fraction(pids, 1.0)
    return busy


def run_bench(
    broker: Broker, scenario: str, bench_args: Sequence[str], json_path: Path, label: str = ""
) -> Record:
    """One bench run in its own session (so a hung run can be ended with all its workers)."""
    json_path.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "bench", scenario,
        "--host", "127.0.0.1", "--port", str(broker.port), "--pid", str(broker.pid),
        "--label", label or broker.name, "--json", str(json_path), *bench_args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src" / "dovecote")}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        process.wait(timeout=BENCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return {"scenario": scenario, "ok": False, "error": "bench timed out"}
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    try:
        lines = json_path.read_text().splitlines()
    except OSError:
        lines = []
    if not lines:
        return {"scenario": scenario, "ok": False, "error": f"bench exited {process.returncode}"}
    record: Record = json.loads(lines[-1])
    return record


def is_close(a: float, b: float, spread: float) -> bool:
    """True when ``a`` and ``b`` differ by at most ``spread`` of the larger."""
    return abs(a - b) <= spread * max(abs(a), abs(b))


def metric(record: Record, key: str) -> float | None:
    """The number ``key`` of a successful run, else None."""
    value = record.get(key)
    if record.get("ok") and isinstance(value, int | float):
        return float(value)
    return None


def median_cell(records: list[Record], key: str) -> tuple[float | None, str]:
    """(median of ``key`` over the good runs, how it reads in the table)."""
    values = [v for v in (metric(r, key) for r in records) if v is not None]
    failed = len(records) - len(values)
    if not values:
        return None, f"failed ({failed}/{len(records)})" if records else "-"
    value = statistics.median(values)
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    if failed:
        text += f" ({failed} of {len(records)} failed)"
    return value, text


def markdown_table(results: Results, scenarios: Sequence[str], runs: int) -> str:
    """Scenario | ActiveMQ | Dovecote | ratio, medians over ``runs`` runs."""
    names = list(results)
    both = len(names) == 2
    lines = [
        f"| scenario (median of {runs}) | " + " | ".join(names)
        + (" | ratio Dovecote/ActiveMQ |" if both else " |"),
        "|---|" + "---|" * len(names) + ("---|" if both else ""),
    ]  # fmt: skip
    for scenario, key, label, higher_is_better in METRICS:
        if scenario not in scenarios:
            continue
        cells = [median_cell(results[name].get(scenario, []), key) for name in names]
        row = f"| {label} | " + " | ".join(text for _, text in cells) + " |"
        if both:
            amq, dove = cells[0][0], cells[1][0]
            if amq and dove is not None:
                better = "higher" if higher_is_better else "lower"
                row += f" {dove / amq:.2f} ({better} is better) |"
            else:
                row += " - |"
        lines.append(row)
    return "\n".join(lines)


def run_details(results: Results, busy_limit: float) -> str:
    """Every run's headline number, so noise shows; runs started on a busy machine marked."""
    out = []
    for scenario, key, label, _ in METRICS:
        for name, by_scenario in results.items():
            records = by_scenario.get(scenario, [])
            values = []
            for record in records:
                value = metric(record, key)
                text = f"{value:,.2f}" if value is not None else f"failed: {record.get('error')}"
                busy = record.get("busy_others", 0.0)
                if isinstance(busy, float) and busy >= busy_limit:
                    text += f" (machine {busy:.0%} busy)"
                values.append(text)
            if values:
                out.append(f"- {label}, {name}: {' / '.join(values)}")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the rest (after ``--``) for the bench."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per broker (default 3)")
    parser.add_argument("--only", choices=("activemq", "dovecote"), help="run one side alone")
    parser.add_argument(
        "--peers",
        type=Path,
        default=REPO.parent / "shared" / "peers",
        help="folder holding activemq.sh (default: ../shared/peers from the repo root)",
    )
    parser.add_argument(
        "--dovecote-cmd",
        help="command that starts Dovecote; {port}, {data_dir}, {repo}, {python} are filled in",
    )
    parser.add_argument(
        "--warmup-runs",
        type=int,
        default=6,
        help="most discarded runs of each scenario per broker before measuring (default 6)",
    )
    parser.add_argument(
        "--warmup-spread",
        type=float,
        default=0.08,
        help="warm-up ends when two runs in a row differ by at most this share (default 0.08)",
    )
    parser.add_argument("--json", type=Path, help="append every run's JSON record to FILE")
    parser.add_argument("--keep", action="store_true", help="keep broker folders and logs")
    parser.add_argument("--busy-limit", type=float, default=0.15, help="CPU share (default 0.15)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="seconds (default 60)")
    args_list = list(sys.argv[1:] if argv is None else argv)
    bench_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, bench_args = args_list[:cut], args_list[cut + 1 :]
    args = parser.parse_args(args_list)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not args.scenarios:
        args.scenarios = list(SCENARIOS)
    return args, bench_args


@contextmanager
def started(name: str, args: argparse.Namespace) -> Iterator[Broker]:
    """The broker called ``name``, freshly started; stopped on exit."""
    if name == "ActiveMQ":
        with activemq(args.peers, args.keep) as broker:
            yield broker
    else:
        with dovecote(args.dovecote_cmd, args.keep) as broker:
            yield broker


@dataclass(frozen=True, slots=True)
class Plan:
    """What every run shares: options, bench arguments, where results go."""

    args: argparse.Namespace
    bench_args: tuple[str, ...]
    json_tmp: Path
    results: Results

    def measure(self, broker: Broker, scenario: str, running: Sequence[Broker]) -> bool:
        """One measured run, once the machine is quiet enough; True if it succeeded."""
        args = self.args
        busy = wait_until_quiet([b.pid for b in running], args.busy_limit, args.quiet_wait)
        record = run_bench(broker, scenario, self.bench_args, self.json_tmp)
        record["busy_others"] = round(busy, 3)
        self.results[broker.name].setdefault(scenario, []).append(record)
        if args.json is not None:
            with open(args.json, "a", encoding="utf-8") as out:
                out.write(json.dumps({**record, "side": broker.name}) + "\n")
        return bool(record.get("ok"))

    def warm_up(self, broker: Broker, scenario: str) -> None:
        """Discarded runs, so the JIT has compiled this scenario's paths (ActiveMQ).

        They end when two in a row agree within ``--warmup-spread``, or after
        ``--warmup-runs``.
        """
        key = next(key for name, key, _, _ in METRICS if name == scenario)
        previous: float | None = None
        for _ in range(self.args.warmup_runs):
            record = run_bench(broker, scenario, self.bench_args, self.json_tmp, f"{broker.name}~")
            value = metric(record, key)
            if (
                value is not None
                and previous is not None
                and is_close(value, previous, self.args.warmup_spread)
            ):
                return
            previous = value


def main(argv: Sequence[str] | None = None) -> int:
    """Start the brokers, run the scenarios, print the table; 0 when every run succeeded."""
    args, bench_args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    names = [n for n in ("ActiveMQ", "Dovecote") if args.only in (None, n.lower())]
    plan = Plan(
        args=args,
        bench_args=tuple(bench_args),
        json_tmp=Path(tempfile.mkdtemp(prefix="dovecote-bench-json-")) / "run.jsonl",
        results={name: {} for name in names},
    )
    shared = [s for s in args.scenarios if s not in FRESH_BROKER]
    fresh = [s for s in args.scenarios if s in FRESH_BROKER]
    all_ok = True
    try:
        if shared:
            with ExitStack() as stack:
                brokers = [stack.enter_context(started(name, args)) for name in names]
                for scenario in shared:
                    for broker in brokers:
                        plan.warm_up(broker, scenario)
                    for _ in range(args.repeat):
                        for broker in brokers:
                            all_ok = plan.measure(broker, scenario, brokers) and all_ok
        for scenario in fresh:
            for _ in range(args.repeat):
                for name in names:
                    with started(name, args) as broker:
                        all_ok = plan.measure(broker, scenario, [broker]) and all_ok
    except SideBySideError as exc:
        print(f"side_by_side: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(plan.json_tmp.parent, ignore_errors=True)
    print()
    print(markdown_table(plan.results, args.scenarios, args.repeat))
    print()
    print(run_details(plan.results, args.busy_limit))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
