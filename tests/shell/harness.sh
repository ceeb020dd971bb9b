# The shell test suites' runner (tests/systemd, tests/hosts): each test is a
# function run in a subshell, reported as `test NAME ... ok|FAILED` with its
# output indented below a failure, and counted for the summary line.
# Source it after setting SUITE to the suite's name.

passed=0
failed=()

# Says why the suite cannot run here, and ends it without failing.
not_run() {
    echo "$SUITE tests: NOT RUN: $1"
    exit 0
}

# A test's failure message; returns non-zero so that `|| fail …` ends it.
fail() {
    echo "$*" >&2
    return 1
}

run() {
    local name=$1 output
    if output="$("$name" 2>&1)"; then
        echo "test $name ... ok"
        passed=$((passed + 1))
    else
        echo "test $name ... FAILED"
        printf '%s\n' "$output" | sed 's/^/    /'
        failed+=("$name")
    fi
}

# The last line, and the suite's exit status.
summary() {
    echo "$SUITE tests: ${passed} passed, ${#failed[@]} failed${failed:+: ${failed[*]}}"
    [ ${#failed[@]} -eq 0 ]
}
