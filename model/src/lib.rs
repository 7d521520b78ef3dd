//! Domain types and pure logic of edgerate, with no I/O: number normalisation, rules, cards and
//! revisions, the prefix index, the billing formula, rate decks (CSV and IME) and times.

pub mod account;
pub mod asrplus;
pub mod billing;
pub mod build;
pub mod card;
pub mod cdr;
pub mod dataset;
pub mod deck;
pub mod diff;
pub mod index;
pub mod notice;
pub mod number;
pub mod plan;
pub mod pricing;
pub mod quality;
pub mod routing;
pub mod rule;
pub mod schedule;
pub mod time;
