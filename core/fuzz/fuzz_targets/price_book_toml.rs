//! A price-book TOML file as `tollgate ctl price-book set` reads it: any text gives a spec or
//! an error, never a panic; a spec round-trips and rates (see the crate's `check_spec`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::rating::PriceBookSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = toml::from_str::<PriceBookSpec>(text) {
        tollgate_core_fuzz::check_spec(&spec);
    }
});
