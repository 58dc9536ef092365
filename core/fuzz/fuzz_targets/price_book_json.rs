//! A price-book JSON file (ctl's `.json` path, and the price book inside API payloads): any
//! bytes give a spec or an error, never a panic; a spec round-trips and rates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::rating::PriceBookSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<PriceBookSpec>(data) {
        tollgate_core_fuzz::check_spec(&spec);
    }
});
