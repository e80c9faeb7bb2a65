//! Page tokens on arbitrary input: never a panic; a decoded cursor came from
//! a token of that very list.
#![no_main]

use bulkhead_rpc::paging::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for kind in ["tasks", "members", "events/x", ""] {
        if let Ok(Some(cursor)) = decode(kind, &text) {
            assert_eq!(decode(kind, &encode(kind, &cursor)), Ok(Some(cursor)));
        }
    }
});
