#!/usr/bin/env python3
"""Prints a CSV deck of ROWS rules for the benchmarks: 8-digit prefixes spread over 10000000-
99999999 (row i: 10000000 + i * 7919 mod 89999999, all distinct), 500 destination names,
rates 0.0000-0.9999. Other decks of the same rules import `row` (scripts/bench-import.sh).

    scripts/deck.py 1000000 > deck.csv
"""
import sys


def row(i):
    """Rule i: (prefix, name, rate)."""
    return (str(10_000_000 + (i * 7919) % 89_999_999), f"Destination {i % 500}", f"0.{(i * 31) % 10000:04d}")


if __name__ == "__main__":
    out = sys.stdout
    out.write("prefix,name,rate,connect_fee,mcd,pulse\n")
    for i in range(int(sys.argv[1])):
        prefix, name, rate = row(i)
        out.write(f"{prefix},{name},{rate},0,60,60\n")
