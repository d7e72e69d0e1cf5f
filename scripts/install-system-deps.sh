#!/usr/bin/env bash
# Debian packages the test suite drives for real: dcmtk (JPEG lossless / JPEG-LS encoders for
# test fixtures), Orthanc with its DICOMweb plugin (the PACS the DICOMweb source is tested
# against), dicom3tools (dciodvfy validates the SR and SC koa writes) and Chromium (the
# Prefect UI browser test). Installs only what is missing.
set -euo pipefail
wanted=(dcmtk orthanc orthanc-dicomweb dicom3tools chromium)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "koa: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "koa: installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts Orthanc as a system service on install; the tests run their own instance.
if command -v systemctl >/dev/null 2>&1; then systemctl stop orthanc 2>/dev/null || true; fi
if [ -x /etc/init.d/orthanc ]; then /etc/init.d/orthanc stop >/dev/null 2>&1 || true; fi
