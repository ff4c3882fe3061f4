# Reads the box defaults (first file, strokebox.base.toml) and the technician's
# strokebox-box.toml (second file), both in the small TOML subset used there (sections,
# [[destinations]] blocks, key = string | number | boolean | array of strings or numbers
# (strings without commas in arrays),
# comments), and writes into the folder `outdir`:
#   strokebox.toml      the daemon's configuration: the defaults with the box file's keys of the
#                       same sections put over them, then its [[destinations]] blocks verbatim
#   10-strokebox.network   systemd-networkd, from [network] (address = "A.B.C.D/N" or "dhcp")
#   timesyncd.conf      [Time] NTP= from [network] ntp (absent: Debian's pool)
#   summary             one line for the journal
# Exits 2 naming the file and line of the first error. mawk-compatible (POSIX awk).
function fail(msg) {
  printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
  failed = 1
  exit 2
}
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function strip_comment(s,   i, c, inq) {
  inq = 0
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\" && inq) { i++; continue }
    if (c == "\"") inq = !inq
    if (c == "#" && !inq) return substr(s, 1, i - 1)
  }
  return s
}
function is_string(v) { return v ~ /^"([^"\\]|\\.)*"$/ }
function is_scalar(v) { return is_string(v) || v ~ /^-?[0-9]+(\.[0-9]+)?$/ || v ~ /^(true|false)$/ }
function is_array(v,   inner, n, parts, i) {
  if (v !~ /^\[.*\]$/) return 0
  inner = trim(substr(v, 2, length(v) - 2))
  sub(/,[ \t]*$/, "", inner)
  if (inner == "") return 1
  n = split(inner, parts, ",")
  for (i = 1; i <= n; i++) if (!is_scalar(trim(parts[i]))) return 0
  return 1
}
function unquote(v) { return substr(v, 2, length(v) - 2) }
# An array of strings as a space-separated list.
function words(v,   inner, n, parts, i, out, w) {
  if (is_string(v)) return unquote(v)
  inner = trim(substr(v, 2, length(v) - 2))
  sub(/,[ \t]*$/, "", inner)
  n = split(inner, parts, ",")
  out = ""
  for (i = 1; i <= n; i++) {
    w = trim(parts[i])
    if (w == "") continue
    if (!is_string(w)) fail("expected strings in " v)
    out = out (out == "" ? "" : " ") unquote(w)
  }
  return out
}
BEGIN {
  if (outdir == "") { print "strokebox-box.awk: -v outdir=DIR missing" > "/dev/stderr"; exit 2 }
  nsec = 0; ndest = 0; file = 0
  split("dicom storage model board status", names, " ")
  for (i in names) passthrough[names[i]] = 1
}
FILENAME != current { current = FILENAME; file++; sec = "" }
{
  line = trim(strip_comment($0))
  if (line == "") next
}
line ~ /^\[\[[ \t]*destinations[ \t]*\]\]$/ {
  if (file == 1) fail("[[destinations]] in the defaults")
  sec = "destinations"; ndest++; dest[ndest] = ""
  next
}
line ~ /^\[[ \t]*[A-Za-z_]+[ \t]*\]$/ {
  sec = trim(substr(line, 2, length(line) - 2))
  if (file == 2 && !(sec in passthrough) && sec != "network")
    fail("unknown section [" sec "] (known: [network], [dicom], [status], [storage], [model], [board], [[destinations]])")
  if (sec != "network" && !(sec in seen)) { seen[sec] = 1; secs[++nsec] = sec; keys[sec] = "" }
  next
}
line ~ /^[A-Za-z_][A-Za-z0-9_]*[ \t]*=/ {
  eq = index(line, "=")
  key = trim(substr(line, 1, eq - 1)); val = trim(substr(line, eq + 1))
  if (sec == "") fail("key " key " before any [section]")
  if (!is_scalar(val) && !is_array(val)) fail("cannot read the value of " key ": " val)
  if (sec == "destinations") { dest[ndest] = dest[ndest] key " = " val "\n"; next }
  if (sec == "network") {
    if (key == "address") {
      if (val != "\"dhcp\"" && val !~ /^"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\/[0-9]+"$/)
        fail("network.address must be \"A.B.C.D/N\" or \"dhcp\", not " val)
    } else if (key == "gateway") {
      if (val !~ /^"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"$/) fail("network.gateway must be \"A.B.C.D\", not " val)
    } else if (key == "dns" || key == "ntp") {
      if (!is_array(val) && !is_string(val)) fail("network." key " must be a list of strings")
    } else fail("unknown key network." key " (known: address, gateway, dns, ntp)")
    net[key] = val
    next
  }
  if (!((sec, key) in value)) keys[sec] = keys[sec] key " "
  value[sec, key] = val
  next
}
{ fail("cannot read this line: " line) }
END {
  if (failed) exit 2
  toml = outdir "/strokebox.toml"
  print "# Rendered at boot by strokebox-box-config.service from /config/strokebox-box.toml over" > toml
  print "# /usr/lib/strokebox-box/strokebox.base.toml. Do not edit: edit the config partition's file." > toml
  for (i = 1; i <= nsec; i++) {
    s = secs[i]
    printf "\n[%s]\n", s > toml
    n = split(keys[s], ks, " ")
    for (j = 1; j <= n; j++) printf "%s = %s\n", ks[j], value[s, ks[j]] > toml
  }
  for (d = 1; d <= ndest; d++) printf "\n[[destinations]]\n%s", dest[d] > toml
  close(toml)

  netf = outdir "/10-strokebox.network"
  print "# Rendered at boot by strokebox-box-config.service from /config/strokebox-box.toml." > netf
  print "[Match]\nName=en* eth*\n\n[Network]" > netf
  addr = ("address" in net) ? unquote(net["address"]) : "dhcp"
  if (addr == "dhcp") print "DHCP=ipv4" > netf
  else print "Address=" addr > netf
  if ("gateway" in net) print "Gateway=" unquote(net["gateway"]) > netf
  if ("dns" in net) { n = split(words(net["dns"]), w, " "); for (j = 1; j <= n; j++) print "DNS=" w[j] > netf }
  print "LinkLocalAddressing=no\nIPv6AcceptRA=no" > netf
  close(netf)

  ntpf = outdir "/timesyncd.conf"
  print "# Rendered at boot by strokebox-box-config.service from /config/strokebox-box.toml." > ntpf
  print "[Time]" > ntpf
  if ("ntp" in net) print "NTP=" words(net["ntp"]) > ntpf
  close(ntpf)

  printf "address %s%s, %d destination(s), NTP %s\n", addr, ("gateway" in net) ? " via " unquote(net["gateway"]) : "",
    ndest, ("ntp" in net) ? words(net["ntp"]) : "Debian pool" > (outdir "/summary")
}
