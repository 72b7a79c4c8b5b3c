#!/usr/bin/env python3
"""ftpfront benchmark (not a test): direct vsftpd, ftpfront and ProFTPD mod_proxy in front of
the same vsftpd, alternated round by round in one run; prints one table of medians with
min/max and the ratios to direct. Started by benches/run.sh (root, release build)."""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ftplib import FTP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402

MIB = 1024 * 1024
CLK = os.sysconf("SC_CLK_TCK")

FULL = dict(rounds=5, big_mib=1024, stor_mib=1024, setup_sessions=200, burst_sessions=1000,
            burst_clients=8, parallel=100, parallel_mib=64, idle=[1000, 10000],
            idle_mod_proxy=300, tls_sessions=100)
QUICK = dict(rounds=1, big_mib=16, stor_mib=16, setup_sessions=20, burst_sessions=80,
             burst_clients=8, parallel=8, parallel_mib=4, idle=[100, 200],
             idle_mod_proxy=20, tls_sessions=5)


# ---- measurements on one path ----------------------------------------------------------

def cpu_seconds(pid, children=False):
    """utime+stime of `pid` (and of its reaped children: mod_proxy forks a process each)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK


class Transfer:
    """One curl transfer: its speed over the transfer phase (from the transfer command to the
    last byte) and the time curl spent before that phase."""

    def __init__(self, mbps, before_ms):
        self.mbps, self.before_ms = mbps, before_ms


def curl(args, expect_bytes):
    """Runs curl; the speed is the transfer phase's, not the whole run's: curl 7.88 (Debian
    12) waits for an FTPS data connection's TLS handshake before it reads the control
    replies that precede RETR, and wakes only on its own timers (200 ms, then 1 s), on
    every path alike (strace: it polls the data socket alone). Session setup has figures
    of its own; counting curl's timers in a 1 s transfer decided the FTPS figure."""
    out = subprocess.run(["curl", "-sS", "--max-time", "900", "-o", "/dev/null", "-w",
                          "%{size_download} %{size_upload} %{time_pretransfer} %{time_total}",
                          *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: {out.stderr.strip()}")
    got, sent, before, total = out.stdout.split()
    moved = max(float(got), float(sent))
    if int(moved) != expect_bytes:
        raise RuntimeError(f"curl {' '.join(args)} moved {moved:.0f} of {expect_bytes} bytes")
    phase = max(float(total) - float(before), 1e-6)
    return Transfer(moved / phase / 1e6, float(before) * 1000)


def url(port, path):
    return f"ftp://127.0.0.1:{port}/{path}"


def tls_args(path):
    return ["--ssl-reqd", "-k"] if path.tls else []


def download_big(path, env):
    return curl([*tls_args(path), url(path.port, "big.bin")], env.big_bytes)


def retr(path, env):
    return download_big(path, env).mbps


def ftps_retr(path, env, results):
    """An FTPS download; curl's time before the transfer goes to a figure of its own."""
    transfer = download_big(path, env)
    results.add("FTPS pre-transfer", path.name, transfer.before_ms)
    return transfer.mbps


def stor(path, env):
    """An upload written over the bytes of an existing file (REST 1, then STOR), checked
    afterwards. A new 1 GiB file needs 1 GiB of memory the virtual machine's host may have
    taken back: `dd` into /dev/shm alternated between 0.3 and 3.4 GB/s here, which decided
    the figure more than the path did. Overwriting in place keeps the file's pages."""
    target = os.path.join(env.root, STOR_TARGET)
    scrub_checked_ranges(target, env)
    speed = curl(["-Q", "REST 1", "-T", env.stor_file, url(path.port, STOR_TARGET)],
                 env.stor_bytes).mbps
    check_upload(target, env)
    # On disk (no room in /dev/shm), the next upload must not pay for this one's writeback.
    os.sync()
    return speed


STOR_TARGET = "up/stor-target.bin"


def prepare_stor_target(env):
    """The file uploads overwrite from offset 1: the upload's size plus one byte."""
    target = os.path.join(env.root, STOR_TARGET)
    with open(env.stor_file, "rb") as src, open(target, "wb") as dst:
        dst.write(b"\0")
        shutil.copyfileobj(src, dst, MIB)
    os.chmod(target, 0o666)


def checked_offsets(env):
    return (0, max(0, env.stor_bytes - MIB))


def scrub_checked_ranges(target, env):
    """Zeroes what `check_upload` compares, in place (the pages stay), so an upload that
    stopped short cannot pass on the bytes of the one before."""
    with open(target, "r+b") as dst:
        for offset in checked_offsets(env):
            dst.seek(offset + 1)
            dst.write(bytes(min(MIB, env.stor_bytes - offset)))


def check_upload(target, env):
    """The upload landed at offset 1, whole: size, and its first and last MiB."""
    size = os.path.getsize(target)
    if size != env.stor_bytes + 1:
        raise RuntimeError(f"upload left {size} bytes, expected {env.stor_bytes + 1}")
    with open(env.stor_file, "rb") as src, open(target, "rb") as dst:
        for offset in checked_offsets(env):
            src.seek(offset)
            dst.seek(offset + 1)
            if src.read(MIB) != dst.read(MIB):
                raise RuntimeError(f"upload differs near offset {offset}")


def one_session(port):
    ftp = FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("anonymous", "bench@")
    ftp.nlst()
    ftp.quit()


def setup_ms(path, env):
    """Median time of one session: connect, login, PASV + NLST, QUIT (Python ftplib)."""
    times = []
    for _ in range(env.cfg["setup_sessions"]):
        start = time.perf_counter()
        one_session(path.port)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def burst_worker(port, count, barrier, results):
    barrier.wait()
    start = time.time()
    failures = []
    for _ in range(count):
        try:
            one_session(port)
        except Exception as e:  # a failed session fails the figure, with its reason
            failures.append(repr(e))
    results.put((start, time.time(), failures))


def burst_seconds(path, env):
    """Wall time of `burst_sessions` sessions opened by `burst_clients` processes at once."""
    clients, total = env.cfg["burst_clients"], env.cfg["burst_sessions"]
    barrier, results = multiprocessing.Barrier(clients), multiprocessing.Queue()
    workers = [multiprocessing.Process(target=burst_worker,
                                       args=(path.port, total // clients, barrier, results))
               for _ in range(clients)]
    for w in workers:
        w.start()
    spans = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    failed = [f for _, _, fs in spans for f in fs]
    if failed:
        raise RuntimeError(f"{len(failed)} of {total} sessions failed: {failed[:3]}")
    return max(e for _, e, _ in spans) - min(s for s, _, _ in spans)


def parallel_mbps(path, env):
    """Aggregate MB/s of `parallel` concurrent downloads of the mid-size file."""
    count = env.cfg["parallel"]
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", "--max-time", "900", "-o", "/dev/null", "-w",
                               "%{size_download}", url(path.port, "mid.bin")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0 or int(float(out or 0)) != env.mid_bytes:
            raise RuntimeError(f"parallel download: rc={p.returncode} got {out} {err.strip()}")
    return count * env.mid_bytes / wall / 1e6


def tls_session_cpu_ms(path, env):
    """CPU of the proxy per small FTPS download session (control + data TLS handshakes)."""
    start = cpu_seconds(path.server.proc.pid, path.children_cpu)
    for _ in range(env.cfg["tls_sessions"]):
        curl([*tls_args(path), url(path.port, "small.bin")], 1)
    time.sleep(0.3)  # mod_proxy: let the master reap the session processes
    spent = cpu_seconds(path.server.proc.pid, path.children_cpu) - start
    return spent * 1000 / env.cfg["tls_sessions"]


# ---- the run ---------------------------------------------------------------------------

class Path:
    def __init__(self, name, server, tls=False, children_cpu=False):
        self.name, self.server, self.port = name, server, server.port
        self.tls, self.children_cpu = tls, children_cpu


class Results:
    def __init__(self):
        self.values = {}
        self.failures = []

    def add(self, figure, path, value):
        self.values.setdefault(figure, {}).setdefault(path, []).append(value)


def with_cpu(path, fn, units, results, cpu_figure):
    """Runs `fn`, recording the proxy's CPU seconds per unit (GiB relayed, or 1,000 sessions
    for milliseconds per session) under `cpu_figure`."""
    before = cpu_seconds(path.server.proc.pid, path.children_cpu)
    value = fn()
    if path.name != "direct":
        time.sleep(0.2 if path.children_cpu else 0)
        spent = cpu_seconds(path.server.proc.pid, path.children_cpu) - before
        results.add(cpu_figure, path.name, spent / units)
        print(f"  {cpu_figure:<19} {path.name:<10} {spent / units:12.3f}", flush=True)
    return value


def rotated(paths, round_no):
    """The paths in the order of round `round_no`: rotated one place per round, so each
    path runs first, in the middle and last equally often. Reversing every other round left
    the middle to one path for good, always right after another path's run of the same
    figure (a 1 GiB upload's writeback still under way, a burst's sockets in TIME_WAIT)."""
    shift = round_no % len(paths)
    return paths[shift:] + paths[:shift]


FIGURE_GROUPS = ["RETR", "STOR", "setup", "burst", "parallel", "FTPS", "idle"]


def warm_up(paths, env):
    """An uncounted download on each path before a round's figures: the first transfer of
    a round ran slower whichever path ran it (RETR through ftpfront 846 and 866 MB/s in the
    two rounds it ran first, 1,153 to 1,615 in the others; direct 1,114 against 1,711 to
    1,831), which made the rotation decide medians."""
    for path in paths:
        curl([url(path.port, "mid.bin")], env.mid_bytes)


def run_round(round_no, paths, tls_paths, env, results, only):
    order = rotated(paths, round_no)
    warm_up(order, env)
    big_gib, stor_gib = env.big_bytes / 2**30, env.stor_bytes / 2**30
    steps = [
        ("RETR", lambda p: with_cpu(p, lambda: retr(p, env), big_gib, results, "CPU RETR")),
        ("STOR", lambda p: stor(p, env)),
        ("setup", lambda p: with_cpu(p, lambda: setup_ms(p, env),
                                     env.cfg["setup_sessions"] / 1000, results, "CPU setup")),
        ("burst", lambda p: burst_seconds(p, env)),
        ("parallel", lambda p: parallel_mbps(p, env)),
    ]
    for figure, step in steps:
        if figure not in only:
            continue
        for path in order:
            measured(figure, path, step, results, round_no)
    if "FTPS" not in only:
        return
    tls_order = rotated(tls_paths, round_no)
    for path in tls_order:
        step = lambda p: with_cpu(p, lambda: ftps_retr(p, env, results), big_gib, results,  # noqa: E731
                                  "CPU FTPS RETR")
        measured("FTPS RETR", path, step, results, round_no)
    for path in tls_order:
        if path.name != "direct":
            measured("CPU FTPS session", path, lambda p: tls_session_cpu_ms(p, env), results,
                     round_no)


def measured(figure, path, step, results, round_no):
    """One measurement. A failure of ftpfront or direct ends the run; mod_proxy, the peer,
    fails now and then under load (a dropped session, a reset): that is counted and shown
    under the table, and its figure for this round is left out."""
    try:
        value = step(path)
    except Exception as e:
        if path.name != "mod_proxy":
            raise
        results.failures.append(f"round {round_no} {figure} {path.name}: {e}")
        print(f"  round {round_no}  {figure:<9} {path.name:<10} FAILED: {e}", flush=True)
        return
    results.add(figure, path.name, value)
    print(f"  round {round_no}  {figure:<9} {path.name:<10} {value:12.2f}", flush=True)


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def process_tree(pid):
    """pid and its children (mod_proxy: one process per session)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout.split()
    return [pid] + [int(p) for p in out]


async def hold_sessions(port, count, opened, semaphore):
    async def login():
        async with semaphore:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for send, expect in ((None, b"220"), (b"USER anonymous\r\n", b"331"),
                                 (b"PASS bench@\r\n", b"230")):
                if send:
                    writer.write(send)
                reply = await asyncio.wait_for(reader.readline(), 60)
                while reply[3:4] == b"-":
                    reply = await asyncio.wait_for(reader.readline(), 60)
                if not reply.startswith(expect):
                    raise RuntimeError(f"idle login: expected {expect!r}, got {reply!r}")
            return writer
    writers = await asyncio.gather(*(login() for _ in range(count)))
    opened.extend(writers)


def idle_memory(name, server, levels, pids_of, results, at_once=200):
    """Proportional memory per idle logged-in session, at each level of `levels`, logging in
    `at_once` sessions at a time."""
    async def measure():
        semaphore = asyncio.Semaphore(at_once)
        opened = []
        await asyncio.sleep(0.5)
        base = pss_kib(pids_of(server))
        previous = 0
        for level in levels:
            await hold_sessions(server.port, level - previous, opened, semaphore)
            previous = level
            await asyncio.sleep(1.0)
            used = pss_kib(pids_of(server)) - base
            per = used / level
            results.add(f"idle KiB/session at {level}", name, per)
            print(f"  idle      {name:<10} {level:6d} sessions  {per:8.1f} KiB each", flush=True)
        for w in opened:
            w.close()
    asyncio.run(measure())


def summarize(results, names):
    rows = []
    for figure, by_path in results.values.items():
        cells = {}
        for name in names:
            vals = by_path.get(name)
            if vals:
                cells[name] = (min(vals), statistics.median(vals), max(vals))
        rows.append((figure, cells))
    return rows


UNITS = {"RETR": "MB/s", "STOR": "MB/s", "FTPS RETR": "MB/s", "setup": "ms",
         "burst": "s", "parallel": "MB/s", "CPU RETR": "s/GiB", "CPU FTPS RETR": "s/GiB",
         "CPU FTPS session": "ms", "CPU setup": "ms", "FTPS pre-transfer": "ms"}


def describe(env):
    cfg = env.cfg
    return {
        "RETR": f"{cfg['big_mib']} MiB RETR (curl, transfer phase)",
        "STOR": f"{cfg['stor_mib']} MiB STOR (curl, transfer phase)",
        "FTPS RETR": f"{cfg['big_mib']} MiB RETR, FTPS client leg (curl, transfer phase)",
        "FTPS pre-transfer": "curl's time before the FTPS RETR's transfer (its timers)",
        "setup": "session setup: connect, login, PASV+NLST, QUIT (ftplib, median)",
        "burst": f"{cfg['burst_sessions']} sessions by {cfg['burst_clients']} clients at once",
        "parallel": f"{cfg['parallel']} concurrent {cfg['parallel_mib']} MiB RETR (aggregate)",
        "CPU RETR": "proxy CPU per GiB relayed, plain RETR",
        "CPU FTPS RETR": "proxy CPU per GiB relayed, FTPS RETR (bulk + 2 handshakes)",
        "CPU FTPS session": "proxy CPU per small FTPS session (handshakes)",
        "CPU setup": "proxy CPU per plain session (setup figure)",
    }


def print_table(rows, names, env):
    higher_better = {"RETR", "STOR", "FTPS RETR", "parallel"}
    text = describe(env)
    head = "| figure | " + " | ".join(f"{n} (min / median / max)" for n in names)
    compared = [n for n in names if n != "direct"]
    head += "".join(f" | {n} / direct" for n in compared)
    if "bare" in names:
        head += " | ftpfront / bare"
    head += " |"
    ratio_pairs = [(n, "direct") for n in compared]
    if "bare" in names:
        ratio_pairs.append(("ftpfront", "bare"))
    lines = [head, "|" + "---|" * (len(names) + 1 + len(ratio_pairs))]
    for figure, cells in rows:
        unit = UNITS.get(figure, "KiB")
        label = text.get(figure, figure + " (PSS)")
        cols = []
        for n in names:
            c = cells.get(n)
            cols.append(f"{c[1]:,.2f} ({c[0]:,.2f} / {c[2]:,.2f}) {unit}" if c else "-")
        ratios = []
        for n, base in ratio_pairs:
            if base in cells and n in cells and cells[base][1] > 0:
                r = cells[n][1] / cells[base][1]
                ratios.append(f"{r:.2f} x" + (" time" if figure not in higher_better else ""))
            else:
                ratios.append("-")
        lines.append(f"| {label} | " + " | ".join(cols) + " | " + " | ".join(ratios) + " |")
    print("\n".join(lines))


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Linux {platform.release()}, "
            "loopback; clients, proxies and vsftpd share the cores")


def versions(tools):
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    parts = [first_line([tools["ftpfront"], "--version"]), "vsftpd 3.0.3 (Debian 12)",
             first_line(["curl", "--version"]).split(" (")[0], f"Python {platform.python_version()}"]
    if tools["mod_proxy"]:
        parts.append(first_line([tools["proftpd"], "-v"]) + " + mod_proxy")
    return ", ".join(parts)


class Env:
    def __init__(self, cfg, work):
        self.cfg, self.work = cfg, work
        self.root = os.path.join(work, "root")
        os.makedirs(os.path.join(self.root, "up"))
        os.chmod(self.root, 0o755)
        os.chmod(os.path.join(self.root, "up"), 0o777)
        self.big_bytes = make_file(os.path.join(self.root, "big.bin"), cfg["big_mib"])
        self.mid_bytes = make_file(os.path.join(self.root, "mid.bin"), cfg["parallel_mib"])
        make_file(os.path.join(self.root, "small.bin"), 0, extra=1)
        self.stor_file = os.path.join(work, "stor.bin")
        self.stor_bytes = make_file(self.stor_file, cfg["stor_mib"])
        prepare_stor_target(self)


def make_file(path, mib, extra=0):
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        for _ in range(mib):
            dst.write(src.read(MIB))
        dst.write(src.read(extra))
    os.chmod(path, 0o644)
    return mib * MIB + extra


def work_dir(cfg):
    need = (cfg["big_mib"] + cfg["stor_mib"] * 2 + cfg["parallel_mib"]) * MIB * 2
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > need:
        return tempfile.mkdtemp(prefix="ftpfront-bench.", dir=shm)
    return tempfile.mkdtemp(prefix="ftpfront-bench.")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ftpfront", required=True)
    parser.add_argument("--prefix", default="/opt/ftpfront-test")
    parser.add_argument("--quick", action="store_true", help="1 round, small files (CI)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--json", help="write the raw values here")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-mod-proxy", action="store_true", help="leave mod_proxy out")
    parser.add_argument("--bare-relay", help="the bare relay's binary (benches/bare-relay): "
                        "adds the floor column, one more hop that only copies")
    parser.add_argument("--only", help="comma-separated figures to measure, of "
                        + ",".join(FIGURE_GROUPS) + " (default: all)")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else FIGURE_GROUPS
    unknown = [name for name in only if name not in FIGURE_GROUPS]
    if unknown:
        parser.error(f"--only: unknown figures {unknown}; known: {FIGURE_GROUPS}")
    args.only = only
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    # ftpfront holds two sockets per session, plus its ports and a few more.
    most_idle = (servers.FD_LIMIT - 500) // 2
    cfg["idle"] = [min(level, most_idle) for level in cfg["idle"]]
    resource.setrlimit(resource.RLIMIT_NOFILE, (servers.FD_LIMIT, servers.FD_LIMIT))
    tools = servers.find_tools(args.prefix, args.ftpfront, args.bare_relay)
    work = work_dir(cfg)
    os.chmod(work, 0o755)
    started = []
    try:
        run(cfg, tools, work, started, args)
    finally:
        for server in started:
            server.stop()
        if args.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(cfg, tools, work, started, args):
    only = args.only

    def start(server):
        started.append(server)
        return server

    print(f"== {machine()}\n== {versions(tools)}", flush=True)
    print("== creating files", flush=True)
    env = Env(cfg, work)
    cert = servers.make_cert(work)
    vsftpd = start(servers.start_vsftpd(tools, work, env.root, "vsftpd"))
    vsftpd_tls = start(servers.start_vsftpd(tools, work, env.root, "vsftpd-tls", cert))
    front = start(servers.start_ftpfront(tools, work, vsftpd.port, "ftpfront", cert))
    paths = [Path("direct", vsftpd), Path("ftpfront", front)]
    tls_paths = [Path("direct", vsftpd_tls, tls=True), Path("ftpfront", front, tls=True)]
    names = ["direct", "ftpfront"]
    if args.no_mod_proxy:
        tools["mod_proxy"] = False
    if tools["mod_proxy"]:
        proxy = start(servers.start_mod_proxy(tools, work, vsftpd.port, "mod_proxy", cert))
        paths.append(Path("mod_proxy", proxy, children_cpu=True))
        tls_paths.append(Path("mod_proxy", proxy, tls=True, children_cpu=True))
        names.append("mod_proxy")
    elif not args.no_mod_proxy:
        print("bench: ProFTPD mod_proxy not installed: its column stays empty", flush=True)
    if tools["bare_relay"]:
        for tls, label, cert_of in ((False, "bare", None), (True, "bare-tls", cert)):
            backend, relay = servers.start_bare_path(tools, work, env.root, label, cert_of)
            start(backend)
            start(relay)
            (tls_paths if tls else paths).append(Path("bare", relay, tls=tls))
        names.append("bare")

    print("== warm-up (not counted)", flush=True)
    for path in paths + tls_paths:
        retr(path, env)
    results = Results()
    print(f"== {cfg['rounds']} rounds, paths alternating", flush=True)
    for round_no in range(1, cfg["rounds"] + 1):
        run_round(round_no, paths, tls_paths, env, results, only)

    try:
        if "idle" in only:
            idle_phase(cfg, tools, work, start, results)
    finally:
        # The table of what was measured, even when the last phase failed.
        rows = summarize(results, names)
        print(f"\n== results: medians of {cfg['rounds']} rounds (min / max)\n")
        print(f"{machine()}\n{versions(tools)}\n")
        print_table(rows, names, env)
        for failure in results.failures:
            print(f"\nfailed (left out): {failure}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": cfg, "values": results.values,
                           "failures": results.failures}, f, indent=1)


def idle_phase(cfg, tools, work, start, results):
    print("== idle logged-in sessions (against a minimal backend)", flush=True)
    idle = start(servers.start_idle_backend(work))
    mem_front = start(servers.start_ftpfront(tools, work, idle.port, "ftpfront-idle",
                                             sessions=cfg["idle"][-1] + 100, ports=10))
    idle_memory("ftpfront", mem_front, cfg["idle"], lambda s: [s.proc.pid], results)
    mem_front.stop()
    if tools["mod_proxy"]:
        mem_proxy = start(servers.start_mod_proxy(tools, work, idle.port, "mod_proxy-idle",
                                                  instances=cfg["idle_mod_proxy"] + 50))
        # A process per session: logged in 10 at a time. Failures are the peer's, listed.
        try:
            idle_memory("mod_proxy", mem_proxy, [cfg["idle_mod_proxy"]],
                        lambda s: process_tree(s.proc.pid), results, 10)
        except Exception as e:
            results.failures.append(f"idle sessions mod_proxy: {e}")
            print(f"  idle      mod_proxy  FAILED: {e}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "idle-backend":
        asyncio.run(servers.serve_idle_backend(int(sys.argv[2])))
    else:
        main()
