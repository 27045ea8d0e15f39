//! Decimal strings to fixed point: `parse_decimal` (exact, straight to an i64 mantissa)
//! against the usual alternative, `str::parse::<f64>` then scaling and rounding (which
//! is also inexact, so the engine could not use it; it is here as the speed yardstick).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stocksblitz_benches::{batched, iters, keep, print_table};
use stocksblitz_engine::fixed::parse_decimal;

const INPUTS: [&str; 8] = [
    "65000.12000000",
    "0.00123000",
    "3400.50",
    "27123.45000000",
    "1.00000000",
    "0.00000001",
    "245.05",
    "99999.99000000",
];

fn main() {
    let n = iters(50_000_000);
    let mut rows = Vec::new();
    rows.push(batched("parse_decimal (exact, scale 8)", n, 64, |i| {
        let s = INPUTS[(i % 8) as usize];
        keep(parse_decimal(keep(s).as_bytes(), 8).ok());
    }));
    rows.push(batched("str::parse::<f64> * 1e8, rounded (baseline)", n, 64, |i| {
        let s = INPUTS[(i % 8) as usize];
        keep(keep(s).parse::<f64>().ok().map(|v| (v * 1e8).round() as i64));
    }));
    print_table("fixed-point parsing of venue decimal strings", &rows);
}
