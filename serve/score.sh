#!/usr/bin/env bash
# Score one image file against a running server:  serve/score.sh photo.jpg [http://127.0.0.1:5001]
# The same request as the README's curl line: the file's base64 bytes in column "image".
set -euo pipefail
file="${1:?usage: serve/score.sh IMAGE_FILE [URL]}"
url="${2:-http://127.0.0.1:5001}"
printf '{"dataframe_split": {"columns": ["image"], "data": [["%s"]]}}' "$(base64 -w0 "$file")" |
  curl -sS --fail-with-body -H 'Content-Type: application/json' --data-binary @- "$url/invocations" &&
  echo || { status=$?; echo; exit "$status"; }
