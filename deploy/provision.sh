#!/usr/bin/env bash
# provision.sh: set up kioskpayd on one device.
#
# Installs the broker credentials and merchant key files (0600, owned by the
# service user), writes /etc/kioskpayd/kioskpayd.toml from the example (or
# your fleet template) with this device's id and broker settings, installs
# the systemd unit if no package did, and enables and starts the service.
# Run it again to change settings: it is idempotent and keeps a backup of a
# config it replaces.
#
# ROOT=/path provisions an image or a test directory instead of the live
# system (nothing is started then).
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: provision.sh --device-id ID [options]

  --device-id ID        this device's id, [A-Za-z0-9_-]{1,64} (required)
  --broker URL[,URL…]   mqtt.url, e.g. ssl://mqtt.example.com:8883; several (the nodes
                        of a cluster, comma-separated) set mqtt.urls instead
  --username NAME       broker user name (default: the device id, as the fleet ACL expects)
  --password-file FILE  broker password (installed as /etc/kioskpayd/keys/mqtt.password)
  --ca-file FILE        CA of the broker's certificate (/etc/kioskpayd/mqtt-ca.crt)
  --cert-file FILE      client certificate for mutual TLS
  --key-file FILE       client key for mutual TLS
  --keys DIR            merchant key files to install into /etc/kioskpayd/keys/, named as the
                        template expects (wxpay_private_key.pem, wxpay_apiv3.key,
                        wxpay_public_key.pem, alipay_app_private_key.pem,
                        alipay_public_key.pem; result.key enables signed results)
  --template FILE       config template (default: the packaged example, else deploy/kioskpayd.toml)
  --notify-url URL      payment.notify_url (public base URL of a notifyrelay)
  --no-start            install and enable, but do not (re)start the service
  -h, --help            this text

Environment: ROOT (install under this directory), SERVICE_USER (default kioskpay).
USAGE
}

die() {
	echo "provision: $*" >&2
	exit 1
}

ROOT=${ROOT:-}
ROOT=${ROOT%/}
SERVICE_USER=${SERVICE_USER:-kioskpay}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

device_id="" broker="" username="" password_file="" ca_file="" cert_file="" key_file=""
keys_dir="" template="" notify_url="" start=1
while [ $# -gt 0 ]; do
	case "$1" in
	--device-id) device_id=${2:?--device-id needs a value}; shift 2 ;;
	--broker) broker=${2:?--broker needs a value}; shift 2 ;;
	--username) username=${2:?--username needs a value}; shift 2 ;;
	--password-file) password_file=${2:?--password-file needs a value}; shift 2 ;;
	--ca-file) ca_file=${2:?--ca-file needs a value}; shift 2 ;;
	--cert-file) cert_file=${2:?--cert-file needs a value}; shift 2 ;;
	--key-file) key_file=${2:?--key-file needs a value}; shift 2 ;;
	--keys) keys_dir=${2:?--keys needs a directory}; shift 2 ;;
	--template) template=${2:?--template needs a file}; shift 2 ;;
	--notify-url) notify_url=${2:?--notify-url needs a URL}; shift 2 ;;
	--no-start) start=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
done

[ -n "$device_id" ] || { usage >&2; die "--device-id is required"; }
[[ $device_id =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "--device-id '$device_id': want 1-64 characters of A-Z a-z 0-9 _ -"
case "$device_id" in backend | notifyrelay) die "--device-id '$device_id' is a reserved broker user name" ;; esac
[ -n "$username" ] || username=$device_id
[ -z "$cert_file" ] || [ -n "$key_file" ] || die "--cert-file needs --key-file"
[ -z "$key_file" ] || [ -n "$cert_file" ] || die "--key-file needs --cert-file"
for f in "$password_file" "$ca_file" "$cert_file" "$key_file"; do
	[ -z "$f" ] || [ -r "$f" ] || die "cannot read $f"
done
if [[ $broker$username$notify_url =~ [\"\\] ]]; then
	die "quotes and backslashes are not allowed in --broker, --username, --notify-url"
fi
[ -z "$keys_dir" ] || [ -d "$keys_dir" ] || die "--keys $keys_dir is not a directory"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (or set ROOT= to provision a directory)"
fi

if [ -z "$template" ]; then
	for t in "$ROOT/usr/share/kioskpayd/kioskpayd.toml.example" "$here/kioskpayd.toml"; do
		if [ -r "$t" ]; then template=$t; break; fi
	done
fi
[ -r "$template" ] || die "no config template: pass --template FILE"

# --- the service user ---------------------------------------------------------
sysusers_conf=""
for f in "$ROOT/usr/lib/sysusers.d/kioskpayd.conf" "$here/../systemd/kioskpayd.sysusers"; do
	if [ -r "$f" ]; then sysusers_conf=$f; break; fi
done
passwd_file="$ROOT/etc/passwd"
[ -z "$ROOT" ] || mkdir -p "$ROOT/etc"
if ! grep -q "^$SERVICE_USER:" "$passwd_file" 2>/dev/null; then
	if [ -n "$sysusers_conf" ] && command -v systemd-sysusers >/dev/null; then
		if [ -n "$ROOT" ]; then
			systemd-sysusers --root="$ROOT" "$sysusers_conf"
		else
			systemd-sysusers "$sysusers_conf"
		fi
	elif [ -z "$ROOT" ]; then
		useradd --system --home-dir /var/lib/kioskpayd --shell /usr/sbin/nologin --groups video "$SERVICE_USER"
	fi
fi
# Numeric ids from the target's own passwd/group: under ROOT the names mean
# nothing to this host.
uid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $3 }' "$passwd_file" 2>/dev/null || true)
gid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $4 }' "$passwd_file" 2>/dev/null || true)
if [ -z "$uid" ]; then
	[ -n "$ROOT" ] || die "user $SERVICE_USER does not exist and could not be created"
	echo "provision: warning: no user $SERVICE_USER under $ROOT; files stay owned by $(id -un)" >&2
fi
owner=() group_owner=()
if [ -n "$uid" ] && [ "$(id -u)" -eq 0 ]; then
	owner=(-o "$uid" -g "$gid")
	group_owner=(-o 0 -g "$gid")
fi

# --- files ----------------------------------------------------------------------
etc="$ROOT/etc/kioskpayd"
# The service user reads but cannot change its configuration.
install -d -m 0750 "${group_owner[@]}" "$etc" "$etc/keys"

# install_secret SRC NAME: a key file only the service user can read.
install_secret() {
	install -m 0600 "${owner[@]}" "$1" "$etc/keys/$2"
}

if [ -n "$keys_dir" ]; then
	found=0
	for f in "$keys_dir"/*; do
		[ -f "$f" ] || continue
		install_secret "$f" "$(basename "$f")"
		found=$((found + 1))
	done
	[ "$found" -gt 0 ] || die "--keys $keys_dir holds no files"
fi
mqtt_password_path="" mqtt_ca_path="" mqtt_cert_path="" mqtt_key_path=""
if [ -n "$password_file" ]; then
	install_secret "$password_file" mqtt.password
	mqtt_password_path=/etc/kioskpayd/keys/mqtt.password
fi
if [ -n "$ca_file" ]; then
	install -m 0644 "${group_owner[@]}" "$ca_file" "$etc/mqtt-ca.crt"
	mqtt_ca_path=/etc/kioskpayd/mqtt-ca.crt
fi
if [ -n "$cert_file" ]; then
	install -m 0644 "${group_owner[@]}" "$cert_file" "$etc/mqtt-client.crt"
	install_secret "$key_file" mqtt-client.key
	mqtt_cert_path=/etc/kioskpayd/mqtt-client.crt
	mqtt_key_path=/etc/kioskpayd/keys/mqtt-client.key
fi
result_key_path=""
if [ -f "$etc/keys/result.key" ]; then
	result_key_path=/etc/kioskpayd/keys/result.key
fi

# --- config -----------------------------------------------------------------------
# set_key SECTION KEY VALUE: rewrite (or uncomment) KEY in [SECTION] ("" is
# the top level) of the TOML on stdin. VALUE is already TOML-quoted.
set_key() {
	awk -v sec="$1" -v key="$2" -v val="$3" '
		/^\[/ { cur = $0; gsub(/^\[|\].*$/, "", cur) }
		{
			line = $0
			if (cur == sec && !done && line ~ "^#?[ \t]*" key "[ \t]*=") {
				print key " = " val
				done = 1
				next
			}
			print line
		}
		END { if (!done) exit 3 }'
}
q() { printf '"%s"' "$1"; }
# unset_key SECTION KEY: comment KEY out in [SECTION] of the TOML on stdin
# (mqtt.url and mqtt.urls exclude each other).
unset_key() {
	awk -v sec="$1" -v key="$2" '
		/^\[/ { cur = $0; gsub(/^\[|\].*$/, "", cur) }
		cur == sec && $0 ~ "^[ \t]*" key "[ \t]*=" { print "# " $0; next }
		{ print }'
}
# qlist "a,b": the TOML list ["a", "b"].
qlist() {
	local IFS=, out="" u
	for u in $1; do
		u=${u## }
		u=${u%% }
		[ -n "$u" ] && out+="${out:+, }$(q "$u")"
	done
	printf '[%s]' "$out"
}

tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.next"' EXIT
cp "$template" "$tmp"
apply() {
	set_key "$@" <"$tmp" >"$tmp.next" || die "template $template has no key '$2' in [${1:-top level}]"
	mv "$tmp.next" "$tmp"
}
apply "" device_id "$(q "$device_id")"
if [[ $broker == *,* ]]; then
	apply mqtt urls "$(qlist "$broker")"
	unset_key mqtt url <"$tmp" >"$tmp.next" && mv "$tmp.next" "$tmp"
elif [ -n "$broker" ]; then
	apply mqtt url "$(q "$broker")"
	unset_key mqtt urls <"$tmp" >"$tmp.next" && mv "$tmp.next" "$tmp"
fi
apply mqtt username "$(q "$username")"
apply mqtt password_file "$(q "$mqtt_password_path")"
apply mqtt ca_file "$(q "$mqtt_ca_path")"
apply mqtt cert_file "$(q "$mqtt_cert_path")"
apply mqtt key_file "$(q "$mqtt_key_path")"
[ -z "$notify_url" ] || apply payment notify_url "$(q "$notify_url")"
if [ -n "$result_key_path" ]; then
	apply unlock result_key_file "$(q "$result_key_path")"
fi

conf="$etc/kioskpayd.toml"
if [ -f "$conf" ] && ! cmp -s "$tmp" "$conf"; then
	backup="$conf.bak.$(date +%Y%m%d%H%M%S)"
	cp -p "$conf" "$backup"
	echo "provision: previous config kept as ${backup#"$ROOT"}"
fi
install -m 0640 "${group_owner[@]}" "$tmp" "$conf"

# --- systemd ------------------------------------------------------------------------
unit_installed=""
for d in "$ROOT/lib/systemd/system" "$ROOT/usr/lib/systemd/system"; do
	if [ -f "$d/kioskpayd.service" ]; then unit_installed=$d/kioskpayd.service; fi
done
if [ -z "$unit_installed" ]; then
	# No package: install the unit and its helpers from this source tree.
	src="$here/../systemd"
	[ -f "$src/kioskpayd.service" ] || die "no kioskpayd.service installed and none in $src"
	install -d -m 0755 "$ROOT/etc/systemd/system" "$ROOT/etc/sysusers.d" "$ROOT/etc/tmpfiles.d"
	install -m 0644 "$src/kioskpayd.service" "$ROOT/etc/systemd/system/kioskpayd.service"
	install -m 0644 "$src/kioskpayd.sysusers" "$ROOT/etc/sysusers.d/kioskpayd.conf"
	install -m 0644 "$src/kioskpayd.tmpfiles" "$ROOT/etc/tmpfiles.d/kioskpayd.conf"
fi

if [ -n "$ROOT" ]; then
	if command -v systemctl >/dev/null; then
		systemctl --root="$ROOT" enable kioskpayd.service >/dev/null 2>&1 ||
			echo "provision: warning: could not enable kioskpayd.service under $ROOT" >&2
	fi
	echo "provision: $device_id provisioned under $ROOT"
	exit 0
fi

if command -v kioskpayd >/dev/null; then
	# Fail here, with the doctor's per-check lines, rather than in a
	# restart loop. The broker or a provider being unreachable right now
	# is reported but does not stop provisioning.
	if ! runuser -u "$SERVICE_USER" -- kioskpayd doctor -config /etc/kioskpayd/kioskpayd.toml; then
		echo "provision: kioskpayd doctor reported problems (above); fix them and run provision.sh again" >&2
	fi
fi
systemctl daemon-reload
systemctl enable kioskpayd.service
if [ "$start" -eq 1 ]; then
	systemctl restart kioskpayd.service
	for _ in $(seq 1 30); do
		if systemctl is-active --quiet kioskpayd.service; then
			echo "provision: $device_id running; follow it with: journalctl -fu kioskpayd"
			exit 0
		fi
		sleep 1
	done
	systemctl --no-pager status kioskpayd.service >&2 || true
	die "kioskpayd did not become active; see journalctl -u kioskpayd"
fi
echo "provision: $device_id provisioned; start it with: systemctl start kioskpayd"
