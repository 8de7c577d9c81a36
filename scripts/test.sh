#!/usr/bin/env bash
# The whole test suite: brings up the servers it needs, then runs every test
# with the race detector. CI runs exactly this. Extra arguments go to go test
# (./scripts/test.sh -run TestX).
#
# While it runs it says which packages are running: a "### start" line when a
# package's tests begin and a "### end" line when they finish, followed by go
# test's own lines for that package, unchanged: "ok  <pkg>" when it passed,
# and when it failed its whole output, as with -v ("--- FAIL: ...",
# "FAIL  <pkg>"). The exit status is go test's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh

# unescape decodes the body of a JSON string (as go test -json writes it)
# into REPLY.
unescape() {
	local s=$1
	s=${s//\\\\/$'\x01'} # an escaped backslash, kept apart from the others
	s=${s//\\\"/\"}
	printf -v s '%b' "$s" # \n \t \r \b \f \uXXXX, the only escapes left
	REPLY=${s//$'\x01'/\\}
}

# render reads go test -json events and prints go test's usual output, package
# by package as each ends, with a line as each package starts and ends.
render() {
	local line action pkg test out
	declare -A buf last
	while IFS= read -r line; do
		if [[ $line != '{'* ]]; then # not an event: pass it through
			printf '%s\n' "$line"
			continue
		fi
		[[ $line =~ \"Action\":\"([a-z-]*)\" ]] && action=${BASH_REMATCH[1]} || action=
		[[ $line =~ \"(Package|ImportPath)\":\"([^\"]*)\" ]] && pkg=${BASH_REMATCH[2]} || pkg=
		[[ $line =~ \"Test\":\" ]] && test=1 || test=
		case $action in
		start)
			printf '### start %s\n' "$pkg"
			;;
		build-output) # compiler errors: at once, as go test prints them
			[[ $line =~ \"Output\":\"(.*)\"\}$ ]] || continue
			unescape "${BASH_REMATCH[1]}"
			printf '%s' "$REPLY"
			;;
		output)
			[[ $line =~ \"Output\":\"(.*)\"\}$ ]] || continue
			unescape "${BASH_REMATCH[1]}"
			out=$REPLY
			buf[$pkg]+=$out
			# A passing package shows only its own last line ("ok  <pkg>").
			[[ -z $test ]] && last[$pkg]=$out
			;;
		pass | fail | skip)
			[[ -n $test ]] && continue
			if [[ $action == fail || $action == skip ]]; then
				[[ $action == fail ]] && printf '### end   %s\n' "$pkg"
				printf '%s' "${buf[$pkg]-}"
			else
				printf '### end   %s\n' "$pkg"
				printf '%s' "${last[$pkg]-}"
			fi
			unset "buf[$pkg]" "last[$pkg]"
			;;
		esac
	done
	# Anything a package printed without ending (go test killed): show it.
	for pkg in "${!buf[@]}"; do
		printf '%s' "${buf[$pkg]}"
	done
}

set +e
go test -json -race -count=1 -timeout 25m ./... "$@" | render
status=${PIPESTATUS[0]}
# go test ends a run with failed tests with a lone FAIL line; -json omits it.
[[ $status == 1 ]] && echo FAIL
exit "$status"
