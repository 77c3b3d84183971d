//! What `sonde top --attach` and `sonde events --attach` read from the
//! agent's local socket: newline-delimited `sonde-local/1` frames. Each line
//! is parsed as the client parses it; a window goes on through `top`'s
//! reader into its board (and the board's rows), an event into its record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::{
    local::{parse_line, Frame},
    model::EventRecord,
    top::{window::Window, Board},
};

/// At most this many lines per input.
const MAX_LINES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut board = Board::new();
    for line in text.lines().take(MAX_LINES) {
        match parse_line(line) {
            Ok(Frame::Window { window, .. }) => {
                if let Ok(window) = Window::from_json(window) {
                    board.add(&window);
                    let _ = board.rows();
                }
            }
            Ok(Frame::Event { event }) => {
                let _ = serde_json::from_value::<EventRecord>(event);
            }
            _ => {}
        }
    }
});
