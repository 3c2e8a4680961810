#!/bin/bash
# tools/bench.py on a bare machine with only Python (as a lent 16-core machine is):
# pitreos's packages installed from wheels carried in $WHEELS (pip --target), peers
# (restic) from $WHEELS/bin. Everything it prints goes to $OUT/log.txt, the result file
# to $OUT. docs/performance.md, "Sixteen cores", says how the wheels were fetched.
#
#   OUT=DIR [WHEELS=.whl] [SCALE=small] [REPEAT=3] [CASES=core] [BUDGET=500] \
#     [BENCH=0] [DIAG=1] [DIAG_BEFORE=SECONDS] \
#     bash tools/bench-bare.sh
#
# CASES: the bench's --cases (core,appendonly adds target 6's rows); BUDGET: seconds the
# bench may run (a lent machine's time is counted); BENCH=0: only generate the data set;
# DIAG=1: then time the command-line backup and restore against their own reported
# seconds, record them with py-spy, and run the limits alone.
set -u
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
OUT=${OUT:?OUT=DIR: where the log and the result file go}
mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}
BUDGET=${BUDGET:-500}
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1
date -u; nproc; $PY --version; grep -m1 "model name" /proc/cpuinfo; free -g | head -2
df -h . /tmp /dev/shm
if [ ! -d "$SITE" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH=$SITE PATH=$SITE/bin:$PWD/$WHEELS/bin:$PATH
unset PYTHONDONTWRITEBYTECODE  # imports are compiled once, as an installed package's are
ln -sfn ../schema pitreos/schema  # where an install puts the schema (pyproject.toml)
$PY -m compileall -q -j0 "$SITE" pitreos tools > /dev/null
$PY -m pitreos --version || exit 1
$PY -c "import yaml, rich, click, blake3, zstandard, structlog, sqlite_utils; print('libyaml', yaml.__with_libyaml__)" || exit 1
py-spy --version; restic version
GIL=--gil  # only where py-spy may attach here (ptrace): a failed sample would end the bench
$PY -c "import time; time.sleep(5)" & sleeper=$!; sleep 1
py-spy dump --pid $sleeper > /dev/null 2>&1 || { GIL=; echo "py-spy cannot attach: no GIL column"; }
kill $sleeper
# the data set and the stores go where there is room on a disk, not in RAM
WORK=$PWD/tools/bench-data
[ "$(df --output=avail -B1G . | tail -1)" -ge 24 ] || WORK=/tmp/bench-data
echo "workdir $WORK"; df -h "$(dirname "$WORK")" | tail -1
ls tools/bench-results > /tmp/before.txt
# new result files go to $OUT as soon as the bench ends, so that a diagnosis that runs
# past the machine's limit loses only itself
collect() {
  for f in $(ls tools/bench-results | grep -vxF -f /tmp/before.txt); do
    cp "tools/bench-results/$f" "$OUT/"
  done
}
SECONDS=0
if [ "${BENCH:-1}" = 1 ]; then
  timeout "$BUDGET" $PY tools/bench.py --scale "${SCALE:-small}" --repeat "${REPEAT:-3}" $GIL \
      --cases "${CASES:-core}" --peers restic --workdir "$WORK"
  echo "bench rc=$? after ${SECONDS}s"
  collect
elif [ ! -e "$WORK/${SCALE:-small}/generated" ]; then
  mkdir -p "$WORK/${SCALE:-small}"
  $PY -c "import sys; sys.path.insert(0, 'tools'); import gen_data, pathlib; gen_data.generate(pathlib.Path('$WORK/${SCALE:-small}/node'), gen_data.SCALES['${SCALE:-small}'])"
  echo "generated after ${SECONDS}s"
fi
# DIAG_BEFORE: skip the diagnosis when the bench has used this many seconds already
if [ -n "${DIAG:-}" ] && [ "$SECONDS" -lt "${DIAG_BEFORE:-100000}" ]; then
  # where a command-line backup and restore spend the time that the engine does not
  D=$WORK/diag; rm -rf "$D"; mkdir -p "$D"
  cp -a --sparse=always "$WORK/${SCALE:-small}/node" "$D/src"
  export PITREOS_CATALOG=$D/catalog PITREOS_CHUNK_SIZE=1048576 TIMEFORMAT="%R s wall"
  fresh() { rm -rf "$D/repo" "$D/catalog"; export PITREOS_STORE=file://$D/$1; $PY -m pitreos init -q; sync; }
  for run in 1 2; do
    fresh repo$run
    echo "cli backup $run"; time $PY -m pitreos --log-json -vv backup "$D/src" > /dev/null 2> "$OUT/cli-backup-$run.jsonl"
    rm -rf "$D/dest"; sync
    echo "cli restore $run"; time $PY -m pitreos --log-json -vv restore latest "$D/dest" > /dev/null 2> "$OUT/cli-restore-$run.jsonl"
  done
  # the limit pipelines alone, one run each (they use processes above 4 cores)
  files=$(find "$D/src" -type f | sort | $PY -c "import json, sys; print(json.dumps(sys.stdin.read().split()))")
  for i in 1 2; do
    sync; $PY tools/bench.py --child "{\"kind\": \"limit_backup\", \"files\": $files, \"out\": \"$D/limit.out\", \"chunk\": 1048576}"
    rm -rf "$D/limit-dest"; sync
    $PY tools/bench.py --child "{\"kind\": \"limit_restore\", \"out\": \"$D/limit.out\", \"source\": \"$D/src\", \"dest\": \"$D/limit-dest\"}"
  done
  fresh repo3
  py-spy record --idle --threads --subprocesses --rate 250 --format raw -o "$OUT/spy-backup.raw" -- \
    $PY -m pitreos backup -q "$D/src" > /dev/null 2>&1
  rm -rf "$D/dest"; sync
  py-spy record --idle --threads --subprocesses --rate 250 --format raw -o "$OUT/spy-restore.raw" -- \
    $PY -m pitreos restore -q latest "$D/dest" > /dev/null 2>&1
  echo "diag done after ${SECONDS}s"
fi
collect
ls -la "$OUT"
