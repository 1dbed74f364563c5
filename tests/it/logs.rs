//! Job logs: appended through heartbeats, read with `after`, followed over a WebSocket, capped
//! at 1 MiB.

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backend_tests;
use crate::helpers::*;

async fn next_text<S>(socket: &mut S) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .expect("a message in time")
    {
        Some(Ok(Message::Text(t))) => Some(serde_json::from_str::<Value>(&t).unwrap()),
        Some(Ok(Message::Close(_))) | None => None,
        other => panic!("unexpected {other:?}"),
    }
}

backend_tests! {
    async fn logs_are_read_in_order_after_an_id(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let lines: Vec<Value> = (0..5).map(|i| json!({"level": "info", "stage": "Plan", "output": format!("line {i}"), "source": "provisioner"})).collect();
        let (status, _) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": lines})).await;
        assert_eq!(status, StatusCode::OK);
        let path = format!("/organizations/default/provisionerjobs/{id}/logs");
        let (status, logs) = app.get(&path, Some(&owner)).await;
        assert_eq!(status, StatusCode::OK);
        let logs = logs.as_array().unwrap().clone();
        assert_eq!(logs.len(), 5);
        assert_eq!(logs[0]["output"], "line 0");
        assert_eq!(logs[0]["log_level"], "info");
        assert_eq!(logs[0]["log_source"], "provisioner");
        assert_eq!(logs[0]["stage"], "Plan");
        let ids: Vec<i64> = logs.iter().map(|l| l["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let (_, rest) = app.get(&format!("{path}?after={}", ids[2]), Some(&owner)).await;
        assert_eq!(rest.as_array().unwrap().iter().map(|l| l["output"].clone()).collect::<Vec<_>>(), [json!("line 3"), json!("line 4")]);
        let (status, body) = app.get(&format!("{path}?after=abc"), Some(&owner)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }

    async fn logs_stop_at_one_mebibyte_and_say_so(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let chunk = "x".repeat(100 * 1024);
        for round in 0..11 {
            let (status, beat) = app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "info", "output": chunk}]})).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(beat["logs_overflowed"], round >= 10, "round {round}");
        }
        let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{id}/logs"), Some(&owner)).await;
        assert_eq!(logs.as_array().unwrap().len(), 10);
        assert_eq!(app.job(&owner, &id).await["logs_overflowed"], true);
    }

    async fn once_logs_overflowed_even_a_small_later_line_is_dropped(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        let path = format!("/jobs/{id}/update");
        let update = |logs: Value| app.worker(&path, json!({"lease_token": lease, "logs": logs}));
        // 1 MiB minus 10 bytes fit; the next 100 bytes do not, so the job overflows.
        let half = "x".repeat((1 << 19) - 5);
        for _ in 0..2 {
            let (status, beat) = update(json!([{"level": "info", "output": half}])).await;
            assert_eq!((status, beat["logs_overflowed"].clone()), (StatusCode::OK, json!(false)));
        }
        let (_, beat) = update(json!([{"level": "info", "output": "y".repeat(100)}])).await;
        assert_eq!(beat["logs_overflowed"], true);
        // Five bytes would still fit under the cap, but a line after a gap is never stored.
        let (status, beat) = update(json!([{"level": "info", "output": "small"}])).await;
        assert_eq!((status, beat["logs_overflowed"].clone()), (StatusCode::OK, json!(true)));
        let (_, logs) = app.get(&format!("/organizations/default/provisionerjobs/{id}/logs"), Some(&owner)).await;
        let outputs: Vec<usize> = logs.as_array().unwrap().iter().map(|l| l["output"].as_str().unwrap().len()).collect();
        assert_eq!(outputs, [half.len(), half.len()], "only the lines before the overflow are stored");
    }

    async fn following_logs_streams_until_the_job_ends(backend: Backend) {
        let (app, owner) = spawn_queue(backend).await;
        let id = app.enqueue(&owner, json!({"type": "workspace_build"})).await["id"].as_str().unwrap().to_string();
        let (_, lease) = app.acquire("d", json!({}), 0).await.unwrap();
        app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "info", "output": "before"}]})).await;

        let url = format!("ws://{}/api/v2/organizations/default/provisionerjobs/{id}/logs?follow", app.addr);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Coder-Session-Token", owner.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");

        assert_eq!(next_text(&mut socket).await.unwrap()["output"], "before");
        app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "warn", "output": "during"}]})).await;
        let during = next_text(&mut socket).await.unwrap();
        assert_eq!(during["output"], "during");
        assert_eq!(during["log_level"], "warn");
        app.worker(&format!("/jobs/{id}/update"), json!({"lease_token": lease, "logs": [{"level": "info", "output": "last"}]})).await;
        app.worker(&format!("/jobs/{id}/complete"), json!({"lease_token": lease})).await;
        assert_eq!(next_text(&mut socket).await.unwrap()["output"], "last");
        assert!(next_text(&mut socket).await.is_none(), "the socket closes once the job has ended");

        // Without credentials the upgrade is refused.
        let url = format!("ws://{}/api/v2/organizations/default/provisionerjobs/{id}/logs?follow", app.addr);
        assert!(tokio_tungstenite::connect_async(url).await.is_err());
    }
}
