#!/usr/bin/env bash
# Reproduce the vendored browser assets of the static book from the npm registry.
#
#   book/vendor/fetch.sh           re-create the npm folders under book/vendor/extra/vendor
#                                  and rewrite book/vendor/SHA256SUMS
#   book/vendor/fetch.sh --check   fetch into a temporary folder and compare with the
#                                  committed files (exit 1 on any difference)
#
# Needs node's npm and the npm registry. Only `npm pack` of exact versions is used (no
# install scripts run). widgets-config.js is ours (not from npm) and is left alone.
# See book/vendor/README.md for what each file is and why it is here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
check=0
[[ "${1:-}" == "--check" ]] && check=1

REQUIREJS=2.3.8
HTML_MANAGER=1.0.15   # @jupyter-widgets/html-manager of ipywidgets 8.1.9 (jupyterlab_widgets 3.0.17)
ANYWIDGET=0.11.0      # the npm twin of the Python anywidget 0.11.0 (_model_module_version ~0.11.*)
MATHJAX=3.2.2

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out"
mkdir -p "$out"

unpack() {  # unpack SPEC DIR: npm pack SPEC and extract it into $tmp/DIR/package
  local spec=$1 dir=$2 tgz
  mkdir -p "$tmp/$dir"
  tgz=$(cd "$tmp" && npm pack --silent "$spec" | tail -n 1)
  tar xzf "$tmp/$tgz" -C "$tmp/$dir"
}

unpack "requirejs@$REQUIREJS" requirejs
unpack "@jupyter-widgets/html-manager@$HTML_MANAGER" html-manager
unpack "anywidget@$ANYWIDGET" anywidget
unpack "mathjax@$MATHJAX" mathjax

d="$out/requirejs-$REQUIREJS"
mkdir -p "$d"
cp "$tmp/requirejs/package/require.js" "$d/"

d="$out/html-manager-$HTML_MANAGER"
mkdir -p "$d"
cp "$tmp/html-manager/package/dist/embed-amd.js" "$d/"
# FontAwesome 5 (bundled CSS of the ipywidgets controls): only the woff2 files, which every
# browser the book targets picks first; the bundle resolves them beside embed-amd.js.
cp "$tmp/html-manager/package/dist/"*.woff2 "$d/"
cp "$tmp/html-manager/package/dist/embed.js.LICENSE.txt" "$d/THIRD-PARTY-NOTICES.txt"

d="$out/anywidget-$ANYWIDGET"
mkdir -p "$d"
cp "$tmp/anywidget/package/dist/index.js" "$tmp/anywidget/package/LICENSE" "$d/"

d="$out/mathjax-$MATHJAX"
mkdir -p "$d/output/chtml/fonts" "$d/input/tex"
cp "$tmp/mathjax/package/es5/tex-chtml.js" "$tmp/mathjax/package/LICENSE" "$d/"
cp -r "$tmp/mathjax/package/es5/output/chtml/fonts/woff-v2" "$d/output/chtml/fonts/"
cp -r "$tmp/mathjax/package/es5/input/tex/extensions" "$d/input/tex/"

dest="$here/extra/vendor"
sums() {  # sums DIR: sha256 of every npm-derived file under DIR, paths relative to DIR
  (cd "$1" && find . -type f ! -name widgets-config.js | LC_ALL=C sort | sed 's|^\./||' \
    | xargs sha256sum)
}
if [[ $check == 1 ]]; then
  if diff <(sums "$out") <(sums "$dest") >/dev/null; then
    echo "vendored files match npm: $(sums "$out" | wc -l) files"
  else
    diff <(sums "$out") <(sums "$dest") || true
    echo "book/vendor/extra/vendor differs from npm: run book/vendor/fetch.sh" >&2
    exit 1
  fi
  exit 0
fi

mkdir -p "$dest"
for sub in "$out"/*; do
  rm -rf "${dest:?}/$(basename "$sub")"
  cp -r "$sub" "$dest/"
done
sums "$dest" > "$here/SHA256SUMS"
echo "wrote $(wc -l < "$here/SHA256SUMS") files under $dest; sizes:"
du -sh "$dest"/*
