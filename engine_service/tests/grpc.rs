//! End-to-end tests of the gRPC service: a real server on port 0 in-process
//! (`server::run` with our own shutdown signal) and the generated client.
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pravah_engine::pb::engine_service_client::EngineServiceClient;
use pravah_engine::pb::{self, list_response, process_request, process_response, work_item};
use pravah_engine::server;
use tonic::transport::Channel;

struct TestServer {
    client: EngineServiceClient<Channel>,
    channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_server() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run(listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestServer {
        client: EngineServiceClient::new(channel.clone()),
        channel,
        stop: Some(stop),
    }
}

/// A tree of `n` small CSV files in subdirectories, two schemas, plus a
/// non-CSV file and a hidden one.
fn csv_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let body: &[u8] = if i % 3 == 0 {
            b"id,name\n1,x\n"
        } else {
            b"a;b;c\n1;2;3\n"
        };
        std::fs::write(dir.join(format!("f{i}.csv")), body).unwrap();
    }
    std::fs::write(root.join("notes.txt"), b"hello").unwrap();
    std::fs::write(root.join(".hidden.csv"), b"h\n").unwrap();
}

fn start_msg(task: &str, options: &str, results_dir: &str) -> pb::ProcessRequest {
    pb::ProcessRequest {
        message: Some(process_request::Message::Start(pb::ProcessStart {
            task: task.into(),
            options_json: options.into(),
            results_dir: results_dir.into(),
            progress_interval_ms: 50,
            ..Default::default()
        })),
    }
}

fn work(id: &str, target: work_item::Target) -> pb::ProcessRequest {
    pb::ProcessRequest {
        message: Some(process_request::Message::Work(pb::WorkItem {
            id: id.into(),
            target: Some(target),
        })),
    }
}

fn source(path: &Path, exts: &[&str]) -> work_item::Target {
    work_item::Target::Source(pb::SourceSpec {
        source: path.to_string_lossy().into_owned(),
        filters: Some(pb::Filters {
            extensions: exts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    })
}

async fn process_all(
    client: &mut EngineServiceClient<Channel>,
    requests: Vec<pb::ProcessRequest>,
) -> Result<Vec<process_response::Event>, tonic::Status> {
    let mut stream = client
        .process(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(msg) = stream.message().await? {
        events.push(msg.event.unwrap());
    }
    Ok(events)
}

fn summary_of(events: &[process_response::Event]) -> &pb::Summary {
    match events.last() {
        Some(process_response::Event::Summary(s)) => s,
        other => panic!("last event is not a summary: {other:?}"),
    }
}

#[tokio::test]
async fn capabilities_declare_csv_header_with_schemas() {
    let mut srv = start_server().await;
    let caps = srv
        .client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.engine_version, env!("CARGO_PKG_VERSION"));
    let task = caps.tasks.iter().find(|t| t.name == "csv-header").unwrap();
    assert_eq!(task.version, "1");
    let options: serde_json::Value = serde_json::from_str(&task.options_schema_json).unwrap();
    assert_eq!(options["additionalProperties"], false);
    assert!(options["properties"]["delimiter"].is_object());
    let result: serde_json::Value = serde_json::from_str(&task.result_schema_json).unwrap();
    assert_eq!(result["required"][0], "columns");
    let limits = caps.limits.unwrap();
    assert!(limits.worker_threads >= 1 && limits.max_batch_files >= 1000);
}

#[tokio::test]
async fn health_reports_serving() {
    let srv = start_server().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(srv.channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "pravah.engine.v1.EngineService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        overall.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn list_streams_batches_then_summary() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    csv_tree(tmp.path(), 2500);
    let mut stream = srv
        .client
        .list(pb::ListRequest {
            source: tmp.path().to_string_lossy().into_owned(),
            filters: Some(pb::Filters {
                extensions: vec!["CSV".into()],
                ..Default::default()
            }),
            batch_size: 1000,
            skip_metadata: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut paths = BTreeSet::new();
    let mut batches = 0;
    let mut summary = None;
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.message.unwrap() {
            list_response::Message::Batch(b) => {
                assert!(b.entries.len() <= 1000);
                batches += 1;
                for e in b.entries {
                    assert!(e.size > 0 && e.modified.is_some());
                    paths.insert(e.path);
                }
            }
            list_response::Message::Summary(s) => summary = Some(s),
            other => panic!("unexpected {other:?}"),
        }
    }
    let summary = summary.unwrap();
    assert_eq!(paths.len(), 2500);
    assert!(paths.contains("d3/f3.csv"));
    assert!(!paths.contains(".hidden.csv"));
    assert_eq!(batches, 3);
    assert_eq!(summary.files, 2500);
    assert_eq!(summary.directories, 11);
    assert_eq!(
        PathBuf::from(&summary.root),
        std::fs::canonicalize(tmp.path()).unwrap()
    );
}

#[tokio::test]
async fn list_missing_source_is_not_found_and_file_source_invalid() {
    let mut srv = start_server().await;
    let err = srv
        .client
        .list(pb::ListRequest {
            source: "/nonexistent/pravah-src".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.message(),
        "source does not exist: /nonexistent/pravah-src"
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("x.csv");
    std::fs::write(&file, b"a\n").unwrap();
    let err = srv
        .client
        .list(pb::ListRequest {
            source: file.to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not a directory"));
}

/// Lists into chunk files, then processes those chunks with ChunkRef items.
#[tokio::test]
async fn list_chunk_dir_then_process_chunks() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    csv_tree(&src, 1200);
    let chunk_dir = tmp.path().join("chunks");
    let mut stream = srv
        .client
        .list(pb::ListRequest {
            source: src.to_string_lossy().into_owned(),
            filters: Some(pb::Filters {
                extensions: vec!["csv".into()],
                ..Default::default()
            }),
            batch_size: 500,
            chunk_dir: chunk_dir.to_string_lossy().into_owned(),
            skip_metadata: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    let mut root = String::new();
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.message.unwrap() {
            list_response::Message::Chunk(c) => chunks.push(c),
            list_response::Message::Summary(s) => root = s.root,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks.iter().map(|c| c.files).sum::<u64>(), 1200);
    assert!(chunks[0].uri.ends_with("chunk-000000.jsonl"));
    let first = std::fs::read_to_string(&chunks[0].uri).unwrap();
    assert_eq!(first.lines().count(), 500);
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(line["p"].as_str().unwrap().ends_with(".csv"));

    let mut requests = vec![start_msg("csv-header", "", "")];
    for c in &chunks {
        requests.push(work(
            &format!("chunk-{}", c.index),
            work_item::Target::Chunk(pb::ChunkRef {
                uri: c.uri.clone(),
                root: root.clone(),
            }),
        ));
    }
    let events = process_all(&mut srv.client, requests).await.unwrap();
    let totals = summary_of(&events).totals.unwrap();
    assert_eq!(totals.files_done, 1200);
    assert_eq!(totals.files_failed, 0);
    let done: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            process_response::Event::ItemDone(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|d| d.error.is_none()));
}

#[tokio::test]
async fn process_source_spec_writes_part_files_and_summary() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    csv_tree(&src, 2100);
    std::fs::write(src.join("d0/empty.csv"), b"").unwrap();
    let results = tmp.path().join("results");
    let events = process_all(
        &mut srv.client,
        vec![
            start_msg(
                "csv-header",
                r#"{"delimiter":"auto"}"#,
                &results.to_string_lossy(),
            ),
            work("job1.item-0", source(&src, &["csv"])),
        ],
    )
    .await
    .unwrap();
    let summary = summary_of(&events);
    let totals = summary.totals.unwrap();
    assert_eq!(totals.files_done, 2101);
    assert_eq!(totals.files_failed, 1);
    assert_eq!(totals.files_discovered, 2101);
    assert!(totals.discovery_complete);
    // Batches of ~1000: three part files, all listed in the summary.
    assert_eq!(summary.part_uris.len(), 3);
    let mut lines = 0;
    let mut empty_line = None;
    for uri in &summary.part_uris {
        assert!(Path::new(uri).is_absolute());
        let name = Path::new(uri)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("part-job1.item-0-0000"), "{name}");
        for line in std::fs::read_to_string(uri).unwrap().lines() {
            lines += 1;
            if line.contains("empty.csv") {
                empty_line = Some(line.to_owned());
            } else {
                let keys: Vec<_> =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect();
                assert_eq!(keys, ["path", "size", "columns"]);
            }
        }
    }
    assert_eq!(lines, 2101);
    let empty: serde_json::Value = serde_json::from_str(&empty_line.unwrap()).unwrap();
    assert_eq!(empty["error_kind"], "invalid_data");
    assert_eq!(empty["size"], 0);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 3);

    let agg: serde_json::Value = serde_json::from_str(&summary.summary_json).unwrap();
    assert_eq!(agg["distinct_schemas"], 2);
    assert_eq!(
        agg["schemas"][0]["columns"],
        serde_json::json!(["a", "b", "c"])
    );
    assert_eq!(agg["schemas"][0]["files"], 1400);
    assert_eq!(
        agg["schemas"][1]["columns"],
        serde_json::json!(["id", "name"])
    );
    assert_eq!(agg["failed"], 1);

    // Progress is rate-bounded, far fewer than one per file, and comes
    // before the summary with the final totals.
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            process_response::Event::Progress(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty() && progress.len() < 100);
    assert_eq!(progress.last().unwrap().files_done, 2101);
    let batches = events
        .iter()
        .filter(|e| matches!(e, process_response::Event::Batch(_)))
        .count();
    assert_eq!(batches, 3);
}

#[tokio::test]
async fn process_file_list_streams_results() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.csv"), b"x,y\n1,2\n").unwrap();
    std::fs::write(tmp.path().join("b.csv"), b"\x00\x01binary").unwrap();
    let files = ["a.csv", "b.csv", "gone.csv", "../escape.csv"]
        .iter()
        .map(|p| pb::FileEntry {
            path: p.to_string(),
            ..Default::default()
        })
        .collect();
    let events = process_all(
        &mut srv.client,
        vec![
            start_msg("csv-header", "", ""),
            work(
                "list",
                work_item::Target::Files(pb::FileList {
                    root: tmp.path().to_string_lossy().into_owned(),
                    files,
                }),
            ),
        ],
    )
    .await
    .unwrap();
    let batch = events
        .iter()
        .find_map(|e| match e {
            process_response::Event::Batch(b) => Some(b),
            _ => None,
        })
        .unwrap();
    assert_eq!(batch.files, 4);
    assert_eq!(batch.failed, 3);
    assert!(batch.part_uri.is_empty());
    let by_path = |p: &str| {
        batch
            .results
            .iter()
            .find(|r| r.path == p)
            .unwrap()
            .outcome
            .clone()
            .unwrap()
    };
    match by_path("a.csv") {
        pb::file_result::Outcome::ResultJson(j) => assert_eq!(j, r#"{"columns":["x","y"]}"#),
        other => panic!("{other:?}"),
    }
    let kind = |p: &str| match by_path(p) {
        pb::file_result::Outcome::Error(e) => e.kind,
        other => panic!("{other:?}"),
    };
    assert_eq!(kind("b.csv"), pb::ErrorKind::InvalidData as i32);
    assert_eq!(kind("gone.csv"), pb::ErrorKind::NotFound as i32);
    assert_eq!(kind("../escape.csv"), pb::ErrorKind::OutsideRoot as i32);
    assert!(events.iter().any(|e| matches!(e, process_response::Event::ItemDone(d) if d.work_id == "list" && d.files == 4 && d.failed == 3)));
}

#[tokio::test]
async fn unknown_task_and_bad_options_are_invalid_argument() {
    let mut srv = start_server().await;
    let err = process_all(&mut srv.client, vec![start_msg("nope", "", "")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("csv-header"), "{}", err.message());

    let err = process_all(
        &mut srv.client,
        vec![start_msg("csv-header", r#"{"colour":1}"#, "")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("colour") && err.message().contains("delimiter"),
        "{}",
        err.message()
    );

    let tmp = tempfile::tempdir().unwrap();
    let err = process_all(&mut srv.client, vec![work("x", source(tmp.path(), &[]))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("start"));

    let err = process_all(
        &mut srv.client,
        vec![
            start_msg("csv-header", "", ""),
            work("../evil", source(tmp.path(), &[])),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("../evil"));
}

#[tokio::test]
async fn missing_source_fails_its_item_only() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    csv_tree(tmp.path(), 10);
    let events = process_all(
        &mut srv.client,
        vec![
            start_msg("csv-header", "", ""),
            work("missing", source(Path::new("/nonexistent/pravah"), &[])),
            work("good", source(tmp.path(), &["csv"])),
        ],
    )
    .await
    .unwrap();
    let done = |id: &str| {
        events
            .iter()
            .find_map(|e| match e {
                process_response::Event::ItemDone(d) if d.work_id == id => Some(d.clone()),
                _ => None,
            })
            .unwrap()
    };
    let missing = done("missing");
    let err = missing.error.unwrap();
    assert_eq!(err.kind, pb::ErrorKind::NotFound as i32);
    assert!(err.message.contains("source does not exist"));
    assert_eq!(done("good").files, 10);
    assert_eq!(summary_of(&events).totals.as_ref().unwrap().files_done, 10);
}

#[tokio::test]
async fn non_utf8_file_name_gets_raw_path_b64() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.csv");
    std::fs::write(src.join(name), b"col1,col2\n").unwrap();
    let results = tmp.path().join("out");
    let events = process_all(
        &mut srv.client,
        vec![
            start_msg("csv-header", "", &results.to_string_lossy()),
            work("w", source(&src, &["csv"])),
        ],
    )
    .await
    .unwrap();
    let summary = summary_of(&events);
    assert_eq!(summary.totals.as_ref().unwrap().files_failed, 0);
    let text = std::fs::read_to_string(&summary.part_uris[0]).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["path"], "caf\u{fffd}.csv");
    assert_eq!(line["raw_path_b64"], "Y2Fm6S5jc3Y=");
    assert_eq!(line["columns"], serde_json::json!(["col1", "col2"]));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_work() {
    let mut srv = start_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let total = 60_000;
    csv_tree(&src, total);
    let results = tmp.path().join("out");
    let mut stream = srv
        .client
        .process(tokio_stream::iter(vec![
            start_msg("csv-header", "", &results.to_string_lossy()),
            work("big", source(&src, &["csv"])),
        ]))
        .await
        .unwrap()
        .into_inner();
    // Wait for the first batch, then hang up.
    loop {
        let msg = stream.message().await.unwrap().unwrap();
        if let Some(process_response::Event::Batch(_)) = msg.event {
            break;
        }
    }
    drop(stream);
    let count = || std::fs::read_dir(&results).unwrap().count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_stop = count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = count();
    assert_eq!(
        after_stop, later,
        "part files kept appearing after the client left"
    );
    assert!(
        later < total / 1000,
        "all {later} parts were written: work was not cancelled"
    );
}
