#!/usr/bin/env bash
# The test suite: with arguments, exactly `pytest ARGS`; without, the whole suite in two
# pytest sessions side by side, the distributed-Airflow tests (one Celery stack, about half
# the suite's time, much of it waiting on the stack) beside everything else. The stack's
# output follows the other session's; the exit status is the first failure's.
set -uo pipefail
if [ $# -gt 0 ]; then exec python -m pytest "$@"; fi
STACK_TESTS=tests/test_celery_stack.py
log="$(mktemp -t llmeval-stack-tests.XXXXXX.log)"
start=$(date +%s)
python -m pytest "$STACK_TESTS" -p no:cacheprovider --durations=10 > "$log" 2>&1 &
stack=$!
trap 'kill "$stack" 2>/dev/null' INT TERM
python -m pytest --ignore="$STACK_TESTS" --durations=20
rest=$?
wait "$stack"
stacked=$?
echo "================ $STACK_TESTS (run beside the above) ================"
cat "$log"
rm -f "$log"
echo ">> whole suite: $(( $(date +%s) - start )) s (other tests: exit $rest; Celery stack tests: exit $stacked)"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$stacked"
