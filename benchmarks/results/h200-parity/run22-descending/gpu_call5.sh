#!/usr/bin/env bash
# run22 call 5: gpu_call4.sh again, on the tree whose parity.py time_jobs runs a heat phase
# before the interleaved rounds (the final numbers).
exec bash "$(dirname "$0")/gpu_call4.sh"
