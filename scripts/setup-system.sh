#!/usr/bin/env bash
# System packages sslalm uses: espeak-ng, Festival + ten of its voices (recorded speakers, training speech),
# sox, FluidSynth + two General MIDI soundfonts, Debian's sound themes and GCompris's data (its farm-animal
# recordings) build the local corpus; Flite, the TimGM6mb soundfont and the Yaru / Deepin sound themes build
# the demo's unseen-sources evaluation set; ffmpeg decodes MP3s that libsndfile cuts short; Java runs the
# caption metrics (pycocoevalcap); chromium runs the Gradio page's browser test (Playwright drives Debian's
# chromium through executable_path: Playwright's own browser download is not used). Idempotent; needs root
# (or sudo).
set -euo pipefail
pkgs=(espeak-ng sox libsox-fmt-mp3 ffmpeg fluidsynth fluid-soundfont-gm sound-theme-freedesktop alsa-utils
      csound-soundfont gcompris-qt-data festival festvox-czech-dita festvox-italp16k festvox-suopuhe-lj
      festvox-ca-ona-hts festvox-czech-machac festvox-czech-ph festvox-suopuhe-mv festvox-kdlpc16k festvox-ru
      festvox-itapc16k
      flite timgm6mb-soundfont yaru-theme-sound deepin-sound-theme default-jre-headless chromium)
missing=()
for p in "${pkgs[@]}"; do
  [ "$p" = default-jre-headless ] && command -v java >/dev/null 2>&1 && continue  # any Java will do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
