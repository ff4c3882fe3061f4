#!/usr/bin/env bash
# Boots the box image (scripts/image.sh) in qemu-system-aarch64 and uses it as a scanner would:
# not part of CI (about 17 minutes of software emulation on 2 busy cores); root is not needed.
#   scripts/image_test.sh [IMG]         (default: dist/strokebox-arm64.img)
# 1. A copy of the image gets a strokebox-box.toml on its config partition (mtools): the qemu
#    user-network address 10.0.2.15/24 and one destination, a storescp on this machine (the
#    guest reaches the host as 10.0.2.2).
# 2. Boot (virt machine, Cortex-A76, 2 vCPUs, TCG; Debian's arm64 kernel by direct kernel boot
#    from dist/strokebox-arm64.{vmlinuz,initrd.img,cmdline}); the DICOM port and the status page
#    are forwarded to 127.0.0.1. Boot to READY: qemu started -> systemd reports strokebox.service
#    started (Type=notify: the daemon's READY=1) on the serial console.
# 3. Phantom study A sent with storescu; wait for its SEG, SR and overlay series at storescp.
# 4. Phantom study B sent; the power is cut (qemu killed with SIGKILL) once PARTIAL of its
#    instances were acknowledged. Offline check of the disk (a copy, journal replayed by e2fsck):
#    every acknowledged SOP instance is in the daemon's index and in its spool.
# 5. Boot again, send study B again (the scanner's retry), wait for its results; power off; check
#    the index: every instance of A and B kept, one job per study, both done; storescp got one
#    SEG per study.
# Prints "image round trip ok" and the times (emulated). Environment: WORK (default
# /tmp/strokebox-image-test, removed first), STROKEBOX (the host's strokebox for the phantoms,
# default build/strokebox), MEM_MIB (default 3072), PARTIAL (default 20), STEP_TIMEOUT_S (default
# 1200, per wait), KEEP=1 keeps WORK (console logs, the disk).
# Host packages: qemu-system-arm dcmtk mtools e2fsprogs sqlite3 curl (scripts/install-deps.sh image).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
IMG=${1:-dist/strokebox-arm64.img}
KERNEL=${IMG%.img}.vmlinuz
INITRD=${IMG%.img}.initrd.img
CMDLINE=$(cat "${IMG%.img}.cmdline" 2>/dev/null || true)
STROKEBOX=${STROKEBOX:-$ROOT/build/strokebox}
WORK=${WORK:-/tmp/strokebox-image-test}
MEM_MIB=${MEM_MIB:-3072}
PARTIAL=${PARTIAL:-20}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-1200}
for f in "$IMG" "$KERNEL" "$INITRD"; do
  [ -f "$f" ] || { echo "image_test: $f missing: run scripts/image.sh" >&2; exit 1; }
done
[ -n "$CMDLINE" ] || { echo "image_test: ${IMG%.img}.cmdline missing: run scripts/image.sh" >&2; exit 1; }
[ -x "$STROKEBOX" ] || { echo "image_test: $STROKEBOX missing (build it, or set STROKEBOX)" >&2; exit 1; }
missing=()
for tool in qemu-system-aarch64:qemu-system-arm storescu:dcmtk storescp:dcmtk echoscu:dcmtk dcmdump:dcmtk \
  mcopy:mtools e2fsck:e2fsprogs debugfs:e2fsprogs sfdisk:fdisk sqlite3:sqlite3 curl:curl; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] || { echo "image_test: missing ${missing[*]}: scripts/install-deps.sh image" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK/received"
DISK=$WORK/box.img
t_test=$(date +%s)
QEMU_PID=""
SCP_PID=""
SEND_PID=""
cleanup() {
  for p in $SEND_PID $QEMU_PID $SCP_PID; do kill -9 "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "image_test: FAILED: $*" >&2
  echo "--- last console lines:" >&2
  tail -n 40 "$WORK"/console-*.log 2>/dev/null >&2 || true
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
SCP_PORT=$(free_port)

echo "== disk: a copy of $IMG with the test's strokebox-box.toml on its config partition"
cp --sparse=always "$IMG" "$DISK"
mapfile -t starts < <(sfdisk --dump "$DISK" | sed -n 's/^.*start= *\([0-9]*\),.*$/\1/p')
cat >"$WORK/strokebox-box.toml" <<END
# image_test.sh: qemu user networking (the guest is 10.0.2.15, the host 10.0.2.2).
[network]
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]
ntp = ["10.0.2.2"]              # no NTP server there: timesyncd keeps trying, the RTC holds

[dicom]
ae_title = "STROKEBOX"
allowed_calling_aes = ["MR1"]
allowed_peers = ["10.0.2.0/24"]
study_quiet_s = 10.0

[status]
bind_address = "0.0.0.0"

[[destinations]]
name = "host"
ae_title = "HOSTSCP"
host = "10.0.2.2"
port = $SCP_PORT
objects = ["seg", "overlay", "sr"]
END
mcopy -o -i "$DISK@@$(( starts[0] * 512 ))" "$WORK/strokebox-box.toml" ::/strokebox-box.toml
# The root partition's checksum: unchanged at the end if the root was never written (read-only).
root_sum() {
  local size
  size=$(sfdisk --dump "$DISK" | sed -n 's/^.*2 : start= *[0-9]*, size= *\([0-9]*\),.*$/\1/p')
  dd if="$DISK" bs=1M iflag=skip_bytes,count_bytes skip=$(( starts[1] * 512 )) count=$(( size * 512 )) status=none | sha256sum | cut -c1-16
}
ROOT_SUM=$(root_sum)

echo "== phantom studies A (seed 101) and B (seed 102), storescp (AE HOSTSCP) on port $SCP_PORT"
"$STROKEBOX" phantom --out "$WORK/studyA" --seed 101 --lesions 2 >/dev/null
"$STROKEBOX" phantom --out "$WORK/studyB" --seed 102 --lesions 1 >/dev/null
study_uid() { dcmdump +P 0020,000d "$(ls "$1"/DWI/* | head -n 1)" | sed 's/.*\[\(.*\)\].*/\1/'; }
UID_A=$(study_uid "$WORK/studyA")
UID_B=$(study_uid "$WORK/studyB")
N_A=$(find "$WORK/studyA/DWI" "$WORK/studyA/ADC" -type f | wc -l)
N_B=$(find "$WORK/studyB/DWI" "$WORK/studyB/ADC" -type f | wc -l)
SLICES_A=$(ls "$WORK/studyA/DWI" | wc -l)
SLICES_B=$(ls "$WORK/studyB/DWI" | wc -l)
storescp -aet HOSTSCP +xa -od "$WORK/received" "$SCP_PORT" >"$WORK/storescp.log" 2>&1 &
SCP_PID=$!

boot() {  # boot N: starts qemu, waits for READY; sets QEMU_PID, T_READY_S
  local n=$1 t0 log
  log=$WORK/console-$n.log
  t0=$(now_ms)
  qemu-system-aarch64 -M virt -cpu cortex-a76 -smp 2 -m "$MEM_MIB" -accel tcg,thread=multi \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE" \
    -drive if=none,id=disk,file="$DISK",format=raw -device virtio-blk-pci,drive=disk \
    -netdev user,id=net0,hostfwd=tcp:127.0.0.1:"$DICOM_PORT"-:11112,hostfwd=tcp:127.0.0.1:"$HTTP_PORT"-:8080 \
    -device virtio-net-pci,netdev=net0,romfile= -device virtio-rng-pci \
    -display none -serial file:"$log" -monitor none -no-reboot >"$WORK/qemu-$n.log" 2>&1 &
  QEMU_PID=$!
  local deadline=$(( $(date +%s) + STEP_TIMEOUT_S ))
  # systemd's status lines carry colour codes: "Started <esc>[0;1;39mstrokebox.service<esc>[0m - ..."
  until grep -aqE 'Started .*strokebox\.service' "$log" 2>/dev/null; do
    kill -0 "$QEMU_PID" 2>/dev/null || { cat "$WORK/qemu-$n.log" >&2; fail "qemu exited during boot $n"; }
    grep -aqE 'Failed to start .*strokebox' "$log" 2>/dev/null && fail "strokebox.service failed to start (boot $n)"
    [ "$(date +%s)" -lt $deadline ] || fail "no READY within $STEP_TIMEOUT_S s (boot $n)"
    sleep 1
  done
  T_READY_S=$(secs "$t0" "$(now_ms)")
  echoscu -aet MR1 -aec STROKEBOX 127.0.0.1 "$DICOM_PORT" || fail "C-ECHO after READY failed (boot $n)"
  echo "boot $n: READY after $T_READY_S s (emulated); C-ECHO ok"
}

# Counts the objects storescp received for a study: "SEG SR SC".
received() {
  local seg=0 sr=0 sc=0 f line
  for f in "$WORK"/received/*; do
    [ -f "$f" ] || continue
    line=$(dcmdump +P 0020,000d +P 0008,0060 "$f" 2>/dev/null | tr '\n' ' ')
    case "$line" in *"[$1]"*) ;; *) continue ;; esac
    case "$line" in *"[SEG]"*) seg=$((seg + 1)) ;; *"[SR]"*) sr=$((sr + 1)) ;; *) sc=$((sc + 1)) ;; esac
  done
  echo "$seg $sr $sc"
}
wait_results() {  # wait_results UID SLICES: until SEG, SR and every overlay slice are in
  local deadline=$(( $(date +%s) + STEP_TIMEOUT_S )) r
  T_SEG_MS=""
  while :; do
    read -r seg sr sc < <(received "$1")
    [ -z "$T_SEG_MS" ] && [ "$seg" -ge 1 ] && T_SEG_MS=$(now_ms)
    [ "$seg" -ge 1 ] && [ "$sr" -ge 1 ] && [ "$sc" -ge "$2" ] && break
    kill -0 "$QEMU_PID" 2>/dev/null || fail "qemu exited while waiting for the results of $1"
    [ "$(date +%s)" -lt $deadline ] || fail "results of $1 not complete within $STEP_TIMEOUT_S s (SEG $seg, SR $sr, overlay $sc of $2)"
    sleep 5
  done
  T_ALL_MS=$(now_ms)
}
send() {  # send DIR LOG: storescu, verbose (one "Received Store Response" per instance)
  storescu -v -aet MR1 -aec STROKEBOX +sd 127.0.0.1 "$DICOM_PORT" "$1/DWI" "$1/ADC" >"$2" 2>&1
}
# The index on the data partition, read offline from a copy of the disk (e2fsck replays the
# journal, as the kernel does at mount). Sets DB (path of a copy of strokebox.db, -wal beside it).
read_data_partition() {
  local tag=$1
  local part=$WORK/data-$tag.ext4 dir=$WORK/data-$tag size_sectors
  size_sectors=$(sfdisk --dump "$DISK" | sed -n 's/^.*3 : start= *[0-9]*, size= *\([0-9]*\),.*$/\1/p')
  dd if="$DISK" of="$part" bs=1M iflag=skip_bytes,count_bytes skip=$(( starts[2] * 512 )) count=$(( size_sectors * 512 )) conv=sparse status=none
  e2fsck -fy "$part" >"$WORK/e2fsck-$tag.log" 2>&1 || [ $? -le 1 ] || { cat "$WORK/e2fsck-$tag.log"; fail "e2fsck of the data partition ($tag)"; }
  mkdir -p "$dir"
  debugfs -R "rdump /private/strokebox $dir" "$part" >/dev/null 2>&1
  JOURNAL_FILES=$(debugfs -R "rdump /journal $dir" "$part" >/dev/null 2>&1; find "$dir/journal" -name '*.journal' | wc -l)
  JOURNAL_KIB=$(du -sk "$dir/journal" | cut -f1)
  rm -f "$part"
  DB=$dir/strokebox/strokebox.db
  [ -f "$DB" ] || fail "no strokebox.db on the data partition ($tag)"
}
q() { sqlite3 "$DB" "$1"; }

echo "== boot 1"
T_BOOT1=$(now_ms)
boot 1
R1=$T_READY_S
curl -fsS "http://127.0.0.1:$HTTP_PORT/status.json" >"$WORK/status-1.json" || fail "status page not reachable"
echo "status page: $(wc -c <"$WORK/status-1.json") bytes of status.json"

echo "== study A: $N_A instances"
send "$WORK/studyA" "$WORK/storescu-A.log" || { cat "$WORK/storescu-A.log"; fail "storescu A"; }
T_A_SENT=$(now_ms)
acked_a=$(grep -c 'Received Store Response (Success)' "$WORK/storescu-A.log" || true)
[ "$acked_a" -eq "$N_A" ] || fail "study A: $acked_a of $N_A acknowledged"
wait_results "$UID_A" "$SLICES_A"
SEG_A=$(secs "$T_A_SENT" "$T_SEG_MS")
ALL_A=$(secs "$T_A_SENT" "$T_ALL_MS")
echo "study A: received -> SEG delivered $SEG_A s, all results ($(received "$UID_A" | awk '{print $1 " SEG, " $2 " SR, " $3 " overlay"}')) $ALL_A s (emulated)"

echo "== study B: $N_B instances; power cut after $PARTIAL acknowledged"
send "$WORK/studyB" "$WORK/storescu-B1.log" &
SEND_PID=$!
deadline=$(( $(date +%s) + STEP_TIMEOUT_S ))
until [ "$(grep -c 'Received Store Response (Success)' "$WORK/storescu-B1.log" 2>/dev/null || true)" -ge "$PARTIAL" ]; do
  kill -0 $SEND_PID 2>/dev/null || fail "storescu B ended before $PARTIAL acknowledgements"
  [ "$(date +%s)" -lt $deadline ] || fail "study B: no $PARTIAL acknowledgements within $STEP_TIMEOUT_S s"
  sleep 0.05
done
kill -9 "$QEMU_PID"
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
wait $SEND_PID 2>/dev/null || true
SEND_PID=""
# The files storescu got Success for: "Sending file: F" ... "Received Store Response (Success)".
awk '/Sending file:/ { f = $NF } /Received Store Response \(Success\)/ { print f }' "$WORK/storescu-B1.log" >"$WORK/acked-B.txt"
ACKED=$(wc -l <"$WORK/acked-B.txt")
for f in $(cat "$WORK/acked-B.txt"); do dcmdump +P 0008,0018 "$f" | sed 's/.*\[\(.*\)\].*/\1/'; done | sort >"$WORK/acked-B.uids"
echo "power cut: $ACKED of $N_B instances acknowledged"

echo "== the disk after the cut (offline, a copy)"
read_data_partition cut
q "SELECT sop_instance_uid FROM instances WHERE study_uid = '$UID_B' ORDER BY 1" >"$WORK/kept-B.uids"
KEPT=$(comm -12 "$WORK/acked-B.uids" "$WORK/kept-B.uids" | wc -l)
LOST=$(comm -23 "$WORK/acked-B.uids" "$WORK/kept-B.uids" | wc -l)
# Each kept instance's spool file is there and is that instance.
spool_ok=0
while IFS='|' read -r uid path; do
  f=$WORK/data-cut/strokebox/${path#/var/lib/strokebox/}
  [ -f "$f" ] && [ "$(dcmdump +P 0008,0018 "$f" 2>/dev/null | sed 's/.*\[\(.*\)\].*/\1/')" = "$uid" ] && spool_ok=$((spool_ok + 1))
done < <(q "SELECT sop_instance_uid, path FROM instances WHERE study_uid = '$UID_B'")
INDEXED_B=$(wc -l <"$WORK/kept-B.uids")
echo "after the cut: $KEPT of $ACKED acknowledged instances in the index ($LOST lost), $INDEXED_B indexed for B, $spool_ok spool files read back; integrity $(q 'PRAGMA integrity_check')"
[ "$LOST" -eq 0 ] || fail "$LOST acknowledged instances lost by the power cut"
[ "$spool_ok" -eq "$INDEXED_B" ] || fail "only $spool_ok of $INDEXED_B spool files of study B read back"

echo "== boot 2 (after the power cut)"
boot 2
R2=$T_READY_S
echo "== study B again (the scanner's retry)"
send "$WORK/studyB" "$WORK/storescu-B2.log" || { tail "$WORK/storescu-B2.log"; fail "storescu B (retry)"; }
T_B_SENT=$(now_ms)
wait_results "$UID_B" "$SLICES_B"
SEG_B=$(secs "$T_B_SENT" "$T_SEG_MS")
ALL_B=$(secs "$T_B_SENT" "$T_ALL_MS")
echo "study B: received -> SEG delivered $SEG_B s, all results $ALL_B s (emulated)"
sleep 10   # anything sent twice would arrive now
curl -fsS "http://127.0.0.1:$HTTP_PORT/status.json" >"$WORK/status-2.json" || true

echo "== power off, final check of the index"
kill -9 "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
read_data_partition end
q "SELECT sop_instance_uid FROM instances WHERE study_uid = '$UID_B' ORDER BY 1" >"$WORK/kept-B-end.uids"
LOST_END=$(comm -23 "$WORK/acked-B.uids" "$WORK/kept-B-end.uids" | wc -l)
INST_A=$(q "SELECT count(*) FROM instances WHERE study_uid = '$UID_A'")
INST_B=$(wc -l <"$WORK/kept-B-end.uids")
JOBS_A=$(q "SELECT count(*) FROM jobs WHERE study_uid = '$UID_A'")
JOBS_B=$(q "SELECT count(*) FROM jobs WHERE study_uid = '$UID_B'")
STATE=$(q "SELECT group_concat(state, ',') FROM (SELECT state FROM studies WHERE study_uid IN ('$UID_A', '$UID_B') ORDER BY study_uid = '$UID_B')")
read -r segA srA scA < <(received "$UID_A")
read -r segB srB scB < <(received "$UID_B")
boots=""
command -v journalctl >/dev/null && boots=", $(journalctl -D "$WORK/data-end/journal" --list-boots --no-pager -q 2>/dev/null | wc -l) boots in it"
echo "journal on the data partition: $JOURNAL_FILES file(s), $JOURNAL_KIB KiB$boots"
[ "$JOURNAL_FILES" -ge 1 ] || fail "no persistent journal on the data partition"
ROOT_SUM_END=$(root_sum)
echo "root partition: sha256 $ROOT_SUM before the first boot, $ROOT_SUM_END after two boots and two power cuts"
[ "$ROOT_SUM" = "$ROOT_SUM_END" ] || fail "the root partition was written to (it is mounted read-only)"
echo "index: study A $INST_A of $N_A instances, $JOBS_A job(s); study B $INST_B of $N_B instances ($LOST_END acknowledged lost), $JOBS_B job(s); states $STATE"
echo "storescp: A $segA SEG, $srA SR, $scA overlay; B $segB SEG, $srB SR, $scB overlay"
[ "$INST_A" -eq "$N_A" ] && [ "$INST_B" -eq "$N_B" ] && [ "$LOST_END" -eq 0 ] || fail "instances missing from the index"
[ "$JOBS_A" -eq 1 ] && [ "$JOBS_B" -eq 1 ] || fail "a study was processed more than once (jobs A $JOBS_A, B $JOBS_B)"
[ "$STATE" = "done,done" ] || fail "studies not both done: $STATE"
[ "$segA" -eq 1 ] && [ "$segB" -eq 1 ] || fail "expected one SEG per study at the destination (A $segA, B $segB)"

echo
echo "image round trip ok: boot to READY $R1 s (first boot) and $R2 s (after the power cut);" \
  "study received -> SEG delivered $SEG_A s (A) and $SEG_B s (B), all results $ALL_A s / $ALL_B s;" \
  "power cut: $ACKED acknowledged, $KEPT kept, $JOBS_B job for the study (emulated: qemu TCG, Cortex-A76, 2 vCPUs;" \
  "test $(( $(date +%s) - t_test )) s)"
