#!/bin/bash
# make demo: the pipeline's partition step on a generated demo disk.
set -eu
echo "demo: not yet assembled"
