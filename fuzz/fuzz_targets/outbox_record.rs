//! What an agent reads back from its disk outbox after a restart: the
//! names of the report files, the `next_sequence` file, and each report's
//! bytes, which it decodes before resending. Names and numbers round-trip;
//! a report that decodes re-encodes to bytes that decode to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sonde::export::outbox::{file_name, parse_next_sequence, record_sequence};
use sonde_proto::v1::AgentReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(sequence) = record_sequence(text) {
            assert!(sequence < u64::MAX, "a number must follow it");
            assert_eq!(record_sequence(&file_name(sequence)), Some(sequence));
        }
        if let Some(next) = parse_next_sequence(text) {
            assert!(next < u64::MAX, "a number must follow it");
            assert_eq!(parse_next_sequence(&next.to_string()), Some(next));
        }
    }
    if let Ok(report) = AgentReport::decode(data) {
        // Bytes, not values: a NaN gauge is not equal to itself.
        let once = report.encode_to_vec();
        let again = AgentReport::decode(once.as_slice()).expect("re-encoded report decodes");
        assert_eq!(again.encode_to_vec(), once);
    }
});
