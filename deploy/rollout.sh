#!/usr/bin/env bash
# rollout.sh: upgrade kioskpayd on many devices over SSH, batch by batch.
#
# The first batch is a single canary. Each batch is upgraded in parallel,
# then every device in it must pass the health check (the unit active and,
# when kioskctl can reach the broker, the device online with the new
# version in its retained status). On the first failure the whole batch is
# rolled back to --rollback-deb and the rollout stops; batches already done
# stay upgraded.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: rollout.sh --deb FILE --version V [options] (--hosts FILE | HOST...)

  --deb FILE            the kioskpay .deb to install
  --version V           the version it contains (checked in the device status)
  --rollback-deb FILE   the .deb to reinstall on a failed batch (the version now deployed)
  --hosts FILE          one device per line: "SSH_HOST [DEVICE_ID]" (# comments);
                        DEVICE_ID defaults to SSH_HOST's short name
  --batch N             devices per batch after the canary (default 5)
  --no-canary           start with a full batch
  --health-timeout S    seconds a device has to become healthy (default 90)
  --no-kioskctl         check only systemctl is-active, not the MQTT status
  --dry-run             print what would run
  -h, --help            this text

Environment: SSH (default "ssh"), SCP (default "scp"), SSH_OPTS (extra
options, e.g. "-i key -o User=ops"), KIOSKCTL (default "kioskctl"; its
broker settings come from KIOSKCTL_BROKER etc.).
USAGE
}

die() {
	echo "rollout: $*" >&2
	exit 2
}
log() { echo "rollout: $*"; }

SSH=${SSH:-ssh}
SCP=${SCP:-scp}
KIOSKCTL=${KIOSKCTL:-kioskctl}
read -r -a ssh_opts <<<"${SSH_OPTS:-}"

deb="" version="" rollback_deb="" hosts_file="" batch=5 canary=1 health_timeout=90 use_kioskctl=1 dry_run=0
hosts=() devices=()
while [ $# -gt 0 ]; do
	case "$1" in
	--deb) deb=${2:?}; shift 2 ;;
	--version) version=${2:?}; shift 2 ;;
	--rollback-deb) rollback_deb=${2:?}; shift 2 ;;
	--hosts) hosts_file=${2:?}; shift 2 ;;
	--batch) batch=${2:?}; shift 2 ;;
	--no-canary) canary=0; shift ;;
	--health-timeout) health_timeout=${2:?}; shift 2 ;;
	--no-kioskctl) use_kioskctl=0; shift ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) hosts+=("$1"); devices+=("${1%%.*}"); shift ;;
	esac
done
[ -n "$deb" ] || die "--deb FILE is required"
[ -f "$deb" ] || die "--deb $deb not found"
[ -n "$version" ] || die "--version is required"
[ -z "$rollback_deb" ] || [ -f "$rollback_deb" ] || die "--rollback-deb $rollback_deb not found"
[[ $batch =~ ^[1-9][0-9]*$ ]] || die "--batch wants a positive number"
[[ $health_timeout =~ ^[0-9]+$ ]] || die "--health-timeout wants seconds"
if [ -n "$hosts_file" ]; then
	while read -r h d _; do
		case "$h" in "" | \#*) continue ;; esac
		hosts+=("$h")
		devices+=("${d:-${h%%.*}}")
	done <"$hosts_file"
fi
[ "${#hosts[@]}" -gt 0 ] || die "no hosts given"
if [ "$use_kioskctl" -eq 1 ] && ! command -v "$KIOSKCTL" >/dev/null; then
	log "warning: $KIOSKCTL not found; health check uses systemctl only"
	use_kioskctl=0
fi
[ -n "$rollback_deb" ] || log "warning: no --rollback-deb: a failed batch is stopped but not rolled back"

run() {
	if [ "$dry_run" -eq 1 ]; then
		echo "+ $*"
		return 0
	fi
	"$@"
}

# install_on HOST DEB: copy a package over and install it; the package's
# postinst restarts the service.
install_on() {
	local host=$1 pkg=$2 remote
	remote="/tmp/$(basename "$pkg")"
	run "$SCP" "${ssh_opts[@]}" -q "$pkg" "$host:$remote" &&
		run "$SSH" "${ssh_opts[@]}" "$host" "sudo dpkg -i '$remote' && rm -f '$remote' && sudo systemctl restart kioskpayd"
}

# rollback_on HOST PKG: installs the previous package. The new daemon may
# have upgraded the order store to a schema the previous one cannot read,
# so with the daemon stopped the store is first written back in the old
# schema (kioskpayd compact -schema 1) by the binary still installed;
# a binary without that option never upgraded the store.
rollback_on() {
	local host=$1 pkg=$2
	run "$SSH" "${ssh_opts[@]}" "$host" "sudo systemctl stop kioskpayd; if /usr/bin/kioskpayd compact -h 2>&1 | grep -q -- -schema; then sudo /usr/bin/kioskpayd compact -config /etc/kioskpayd/kioskpayd.toml -schema 1; fi" &&
		install_on "$host" "$pkg"
}

# healthy HOST DEVICE: the unit is active and, with kioskctl, the device
# reports itself online running $version. Retried until the timeout.
healthy() {
	local host=$1 dev=$2 deadline=$((SECONDS + health_timeout))
	[ "$dry_run" -eq 0 ] || { echo "+ check $host ($dev)"; return 0; }
	while :; do
		if "$SSH" "${ssh_opts[@]}" "$host" "systemctl is-active --quiet kioskpayd"; then
			if [ "$use_kioskctl" -eq 0 ] ||
				"$KIOSKCTL" status -device "$dev" -want-version "$version" >/dev/null 2>&1; then
				return 0
			fi
		fi
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 3
	done
}

total=${#hosts[@]} i=0 n=0 size=$batch
[ "$canary" -eq 0 ] || size=1
while [ "$i" -lt "$total" ]; do
	n=$((n + 1))
	end=$((i + size))
	[ "$end" -le "$total" ] || end=$total
	batch_hosts=("${hosts[@]:i:end-i}")
	batch_devs=("${devices[@]:i:end-i}")
	log "batch $n: ${batch_hosts[*]}"

	pids=()
	for h in "${batch_hosts[@]}"; do
		install_on "$h" "$deb" &
		pids+=($!)
	done
	failed=()
	for k in "${!pids[@]}"; do
		if ! wait "${pids[$k]}"; then
			failed+=("${batch_hosts[$k]} (install)")
		fi
	done
	if [ "${#failed[@]}" -eq 0 ]; then
		for k in "${!batch_hosts[@]}"; do
			if ! healthy "${batch_hosts[$k]}" "${batch_devs[$k]}"; then
				failed+=("${batch_hosts[$k]} (health)")
			fi
		done
	fi

	if [ "${#failed[@]}" -gt 0 ]; then
		log "batch $n FAILED: ${failed[*]}"
		if [ -n "$rollback_deb" ]; then
			log "rolling back batch $n to $(basename "$rollback_deb")"
			for h in "${batch_hosts[@]}"; do
				rollback_on "$h" "$rollback_deb" || log "ROLLBACK FAILED on $h: fix it by hand"
			done
		fi
		log "stopped after $i of $total devices upgraded; not touched: ${hosts[*]:end}"
		exit 1
	fi
	log "batch $n healthy"
	i=$end
	size=$batch
done
log "all $total devices run $version"
