//! Errors keep what caused them: a store failure's [`std::error::Error::source`] chain reaches
//! the underlying error (the OS error under a failed store file), while the message a user sees
//! stays the one that says what to do.

use std::error::Error as _;

use steward::{Error, ErrorKind};

/// Every error in `e`'s source chain, `e` excluded.
fn sources(e: &Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s);
        next = s.source();
    }
    out
}

#[test]
fn error_is_send_sync_static() {
    fn check<T: std::error::Error + Send + Sync + 'static>() {}
    check::<Error>();
}

/// A data directory whose `steward.redb` is a directory: the store cannot open its file. The
/// start fails with the storage error users have always seen, and its source chain ends at the
/// OS error.
#[tokio::test]
async fn store_that_cannot_open_keeps_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("steward.redb");
    std::fs::create_dir(&file).unwrap();
    let e = match steward::Node::builder("ship1")
        // Nothing listens there; the store opens (and fails) before the broker is used.
        .brokers(["nats://127.0.0.1:1"])
        .data_dir(dir.path())
        .start()
        .await
    {
        Ok(_) => panic!("a node started on a store path that is a directory"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Storage, "{e}");
    assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    let chain = sources(&e);
    assert_eq!(chain.len(), 2, "store error, then OS error: {chain:?}");
    let io = chain[1]
        .downcast_ref::<std::io::Error>()
        .unwrap_or_else(|| panic!("the chain does not end at the OS error: {chain:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::IsADirectory);
    assert_eq!(chain[0].to_string(), format!("I/O error: {io}"));
    // The message is the one users saw before sources were kept.
    assert_eq!(
        e.to_string(),
        format!(
            "the message store failed: {}: I/O error: {io}; check free disk space and \
             permissions of the data directory",
            file.display()
        )
    );
}

/// A `steward.redb` that is not a store file: `inspect` fails with the storage error users
/// have always seen, and the chain goes through the store's report to the OS-level error.
#[tokio::test]
async fn foreign_store_file_keeps_the_store_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("steward.redb");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let e = steward::inspect(dir.path(), 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e}");
    let chain = sources(&e);
    assert_eq!(chain.len(), 2, "store error, then its I/O error: {chain:?}");
    let io = chain[1]
        .downcast_ref::<std::io::Error>()
        .unwrap_or_else(|| panic!("the chain does not end at the I/O error: {chain:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        format!(
            "the message store failed: {}: I/O error: {io}; check free disk space and \
             permissions of the data directory",
            file.display()
        )
    );
}

/// An error with nothing underneath has no source, and its message is unchanged.
#[tokio::test]
async fn config_error_without_cause_has_no_source() {
    let dir = tempfile::tempdir().unwrap();
    let e = match steward::Node::builder("ship1")
        .brokers(Vec::<String>::new())
        .data_dir(dir.path())
        .start()
        .await
    {
        Ok(_) => panic!("a node started without a broker URL"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_eq!(e.to_string(), "invalid configuration: no broker URL given");
    assert!(e.source().is_none(), "{e:?}");
}
