#!/usr/bin/env bash
# placeholder: replaced by the certificate issue
mkdir -p "$1/certs"
