#!/bin/sh
# A stand-in for Trustee's kbs-client, for the kbs-admin.sh test: it accepts exactly the real
# client's argument grammar for the commands kbs-admin.sh uses, refuses anything else as clap
# would (exit 2), records each request in $STUB_LOG and prints what the real client prints
# (tools/kbs-client/src/main.rs of confidential-containers/trustee: global --url and
# --cert-file before the subcommand; `config [--admin-token-file FILE]` (trustee#1239) then
# set-sample-reference-value NAME VALUE [--as-integer|--as-bool] [--as-single-value],
# set-attestation-policy [--type T] [--id ID] --policy-file F,
# set-resource-policy (--policy-file F|--allow-all|--deny-all|--affirming|--default),
# set-resource --path P --resource-file F; an uploaded file is echoed in base64 on stdout).
set -eu
usage() { echo "error: $*" >&2; exit 2; }
value() { [ $# -ge 2 ] || usage "a value is required for '$1 <VALUE>' but none was supplied"; }
readable() { [ -r "$1" ] || { echo "Failed to read: $1" >&2; exit 1; }; }
url=http://127.0.0.1:8080
while [ $# -gt 0 ]; do
	case "$1" in
	--url) value "$@"; url=$2; shift 2 ;;
	--cert-file) value "$@"; readable "$2"; shift 2 ;;
	-*) usage "unexpected argument '$1' found" ;;
	*) break ;;
	esac
done
[ "${1:-}" = config ] || usage "unrecognized subcommand '${1:-}'"
shift
token=
while [ $# -gt 0 ]; do
	case "$1" in
	--admin-token-file) value "$@"; readable "$2"; token=$(cat "$2"); shift 2 ;;
	-*) usage "unexpected argument '$1' found" ;;
	*) break ;;
	esac
done
sub=${1:-}
[ $# -gt 0 ] && shift
request="token=$token url=$url $sub"
case "$sub" in
set-sample-reference-value)
	n=0 kind=0
	while [ $# -gt 0 ]; do
		case "$1" in
		--as-integer | --as-bool) kind=$((kind + 1)) ;;
		--as-single-value) ;;
		-*) usage "unexpected argument '$1' found" ;;
		*) n=$((n + 1)) ;;
		esac
		request="$request $1"
		shift
	done
	[ "$n" -eq 2 ] || usage "set-sample-reference-value takes <NAME> <VALUE> ($n given)"
	[ "$kind" -le 1 ] || usage "the argument '--as-integer' cannot be used with '--as-bool'"
	out="Reference Values Updated"
	;;
set-attestation-policy | set-resource-policy)
	file= chosen=0
	while [ $# -gt 0 ]; do
		case "$sub:$1" in
		set-attestation-policy:--type | set-attestation-policy:--id) value "$@"; request="$request $1 $2"; shift ;;
		*:--policy-file) value "$@"; readable "$2"; file=$2; chosen=$((chosen + 1)); request="$request $1 $2"; shift ;;
		set-resource-policy:--allow-all | set-resource-policy:--deny-all | set-resource-policy:--affirming | set-resource-policy:--default)
			chosen=$((chosen + 1)); request="$request $1" ;;
		*) usage "unexpected argument '$1' found" ;;
		esac
		shift
	done
	[ "$chosen" -eq 1 ] || usage "$sub needs exactly one policy ($chosen given)"
	out="Set policy success
 policy: $( [ -n "$file" ] && base64 -w0 "$file")"
	;;
set-resource)
	path= file=
	while [ $# -gt 0 ]; do
		case "$1" in
		--path) value "$@"; path=$2; shift ;;
		--resource-file) value "$@"; readable "$2"; file=$2; shift ;;
		*) usage "unexpected argument '$1' found" ;;
		esac
		shift
	done
	[ -n "$path" ] && [ -n "$file" ] || usage "set-resource needs --path and --resource-file"
	request="$request --path $path --resource-file $file"
	out="Set resource success
 resource: $(base64 -w0 "$file")"
	;;
*) usage "unrecognized subcommand '$sub'" ;;
esac
printf '%s\n' "$request" >>"$STUB_LOG"
printf '%s\n' "$out"
