#!/usr/bin/env bash
# Placeholder: FiftyOne offline mongod + chromium set-up (owned by the inspect work).
exit 0
