//! Fuzz the physical-replication messages inside CopyData (XLogData,
//! keepalive, standby status update, hot-standby feedback): a parsed message
//! writes back to exactly the input. Any panic is a bug.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zenith_utils::pq_proto::replication::ReplicationMessage;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    if let Ok(msg) = ReplicationMessage::parse(&data) {
        assert_eq!(msg.to_bytes(), data);
    }
});
