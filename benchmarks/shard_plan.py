"""Plan pytest shards by the tests' recorded durations, and list what a cut run did not finish.

``benchmarks/gpu_shards.sh`` runs the GPU tests in parallel shards inside one device call. Dealt
out by line number, two of the slowest tests can share a shard and run it past the call's limit
while the others finish early (stop 72: two 137-150 s cases in one 230 s shard). This plans the
shards longest first instead (each test to the shard with the least planned time), from the
``--durations`` lists that earlier runs left in ``benchmarks/results`` (``"12.34s call
tests/...::id"``; the largest recorded time of an id counts, setup and teardown added to its
call). Within a shard the shortest run first, so a cut shard has finished as many tests as it
could. An id with no record gets ``--default`` seconds (the lists hold only each shard's 10
slowest, so the unrecorded ones are the fast ones).

    python benchmarks/shard_plan.py plan IDS_FILE NUM_SHARDS OUT_DIR [--durations PATH ...] [--default S]
        writes OUT_DIR/shard<i>.txt (ids, one a line) and prints each shard's planned seconds
    python benchmarks/shard_plan.py unfinished IDS_FILE LOG ...
        prints the ids of IDS_FILE that no LOG (pytest -v output) reports as passed, failed,
        skipped, xfailed, xpassed or errored: a cut run's remainder, one a line, for
        ``gpu_shards.sh @FILE``
"""
import argparse
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_SOURCES = ("benchmarks/results/**/pytest_shard*.txt", "benchmarks/results/**/shards.txt")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s+(call|setup|teardown)\s+(\S+::\S.*?)\s*$")
_OUTCOME = re.compile(r"^(\S+::\S.*?)\s+(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b")
_OUTCOME_SUMMARY = re.compile(r"^(?:FAILED|ERROR|EARLY FAILED)\s+(\S+::\S.*?)(?:\s+-\s.*)?$")


def read_ids(path):
    """The ids of a file, one a line (blank lines and lines without '::' ignored), in order."""
    with open(path) as f:
        return [line.strip() for line in f if "::" in line]


def recorded_durations(paths):
    """{id: seconds}: each id's largest recorded time over the files, its call, setup and
    teardown within one file added."""
    best = {}
    for path in paths:
        per_file = {}
        with open(path, errors="replace") as f:
            for line in f:
                m = _DURATION.match(line)
                if m:
                    per_file[m.group(3)] = per_file.get(m.group(3), 0.0) + float(m.group(1))
        for test_id, secs in per_file.items():
            best[test_id] = max(best.get(test_id, 0.0), secs)
    return best


def source_files(patterns, root=ROOT):
    out = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.join(root, pattern)
        out += sorted(glob.glob(full, recursive=True))
    return out


def plan(ids, num_shards, durations, default):
    """Longest first to the least-loaded shard (ties: the earlier id, the lower shard); each shard
    then shortest first, ties in the ids' order. Returns (shards, planned seconds a shard)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if default < 0:
        raise ValueError(f"default must be a non-negative number of seconds, got {default}")
    seen = set()
    unique = [i for i in ids if not (i in seen or seen.add(i))]
    order = {test_id: n for n, test_id in enumerate(unique)}
    cost = {test_id: durations.get(test_id, default) for test_id in unique}
    shards = [[] for _ in range(num_shards)]
    load = [0.0] * num_shards
    for test_id in sorted(unique, key=lambda t: (-cost[t], order[t])):
        k = min(range(num_shards), key=lambda s: (load[s], s))
        shards[k].append(test_id)
        load[k] += cost[test_id]
    for shard in shards:
        shard.sort(key=lambda t: (cost[t], order[t]))
    return shards, load


def finished(logs):
    """The ids that the pytest -v logs report with an outcome."""
    done = set()
    for path in logs:
        with open(path, errors="replace") as f:
            for line in f:
                m = _OUTCOME.match(line) or _OUTCOME_SUMMARY.match(line)
                if m:
                    done.add(m.group(1))
    return done


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="write OUT_DIR/shard<i>.txt")
    p.add_argument("ids")
    p.add_argument("num_shards", type=int)
    p.add_argument("out_dir")
    p.add_argument("--durations", nargs="*", default=list(DEFAULT_SOURCES),
                   help="files or globs (relative to the repository root) of pytest --durations lists")
    p.add_argument("--default", type=float, default=5.0, help="seconds for an id with no record")
    u = sub.add_parser("unfinished", help="the ids no log reports an outcome for")
    u.add_argument("ids")
    u.add_argument("logs", nargs="+")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.ids):
        ap.error(f"ids: no such file {args.ids!r}")
    ids = read_ids(args.ids)
    if args.cmd == "unfinished":
        missing = [p for p in args.logs if not os.path.isfile(p)]
        if missing:
            ap.error(f"logs: no such file {missing[0]!r}")
        done = finished(args.logs)
        sys.stdout.write("".join(f"{i}\n" for i in ids if i not in done))
        return 0
    if args.num_shards < 1:
        ap.error(f"num_shards must be at least 1, got {args.num_shards}")
    if args.default < 0:
        ap.error(f"--default must be a non-negative number of seconds, got {args.default}")
    durations = recorded_durations(source_files(args.durations))
    shards, load = plan(ids, args.num_shards, durations, args.default)
    os.makedirs(args.out_dir, exist_ok=True)
    for k, shard in enumerate(shards):
        with open(os.path.join(args.out_dir, f"shard{k}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in shard))
    known = sum(1 for i in set(ids) if i in durations)
    print(f"shard_plan: {len(set(ids))} ids ({known} with a recorded time, the rest {args.default:g} s), "
          f"{args.num_shards} shards, planned s: " + " ".join(f"{x:.0f}" for x in load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
