//! sock_diag answers as the kernel sends them to the agent (the listening
//! TCP sockets of a namespace): any bytes, answering request 1. A socket
//! parsed comes from a message of at least its size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::host::sockdiag::parse_answers;

/// `nlmsghdr` + `inet_diag_msg`: the least one socket takes.
const MIN_SOCKET_BYTES: usize = 16 + 72;

fuzz_target!(|data: &[u8]| {
    if let Ok(answers) = parse_answers(data, 1) {
        assert!(answers.sockets.len() * MIN_SOCKET_BYTES <= data.len());
    }
});
