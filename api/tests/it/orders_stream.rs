//! Order entry and the private channels (`orders`, `fills`, `positions`) over the
//! WebSocket stream, against a running server.

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn is(v: &Value, kind: &str, channel: &str) -> bool {
    v["type"] == kind && v["channel"] == channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_entry_and_private_channels() {
    let app = start().await;
    let mut alice = ws_as(&app, "alice").await;
    send(
        &mut alice,
        json!({"op":"subscribe","channels":["orders","fills","positions"],"id":1}),
    )
    .await;
    assert_eq!(recv(&mut alice, WAIT).await.unwrap()["type"], "subscribed");
    for ch in ["orders", "fills", "positions"] {
        let snap = recv(&mut alice, WAIT).await.unwrap();
        assert!(is(&snap, "snapshot", ch), "{snap}");
        assert_eq!(snap["seq"], 1);
        assert!(snap["engine_ts_us"].as_i64().is_some_and(|t| t > 0), "{snap}");
    }

    send(
        &mut alice,
        json!({"op":"order.new","id":"c1","order":{"symbol":"SBZ","side":"sell","type":"limit","price":"100.00","qty":"10","client_order_id":"ws-1"}}),
    )
    .await;
    // The answer and the private update travel separately: either may come first.
    let (mut ack, mut accepted) = (Value::Null, Value::Null);
    while ack.is_null() || accepted.is_null() {
        let v = recv(&mut alice, WAIT).await.expect("ack and update");
        if v["type"] == "order.ack" {
            ack = v;
        } else if is(&v, "update", "orders") {
            accepted = v;
        }
    }
    assert_eq!(ack["id"], "c1");
    assert_eq!(ack["data"]["order"]["status"], "open");
    let order_id = ack["data"]["order"]["order_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["data"]["event"], "accepted");
    assert_eq!(accepted["seq"], 2);
    assert!(
        accepted["engine_ts_us"].as_i64().is_some_and(|t| t > 0),
        "the order event's engine time: {accepted}"
    );

    // Bob takes 4 over REST: Alice's private channels show the fill and the position.
    let r = reqwest::Client::new()
        .post(http(&app, "/api/v1/orders"))
        .bearer_auth(token("bob", "trader"))
        .json(&json!({"symbol":"SBZ","side":"buy","type":"market","qty":"4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let fill = recv_until(&mut alice, WAIT, |v| is(v, "update", "fills"))
        .await
        .unwrap();
    assert_eq!(
        (fill["data"]["qty"].as_str(), fill["data"]["price"].as_str()),
        (Some("4"), Some("100.00"))
    );
    assert_eq!(fill["data"]["order_id"], order_id.as_str());
    let pos = recv_until(&mut alice, WAIT, |v| is(v, "update", "positions"))
        .await
        .unwrap();
    assert_eq!(pos["data"]["qty"], "-4");
    let part = recv_until(&mut alice, WAIT, |v| is(v, "update", "orders"))
        .await
        .unwrap();
    assert_eq!(part["data"]["event"], "partially_filled");
    assert_eq!(part["data"]["order"]["leaves_qty"], "6");

    // Replace and cancel over the socket.
    send(
        &mut alice,
        json!({"op":"order.replace","id":"c2","order_id":order_id,"qty":"8"}),
    )
    .await;
    let ack = recv_until(&mut alice, WAIT, |v| v["type"] == "order.ack" || v["type"] == "error")
        .await
        .unwrap();
    assert_eq!(ack["data"]["order"]["qty"], "8", "{ack}");
    send(&mut alice, json!({"op":"order.cancel","id":"c3","order_id":order_id})).await;
    let ack = recv_until(&mut alice, WAIT, |v| v["id"] == "c3").await.unwrap();
    assert_eq!(ack["data"]["order"]["status"], "cancelled");
    send(&mut alice, json!({"op":"order.cancel","id":"c4","order_id":order_id})).await;
    let err = recv_until(&mut alice, WAIT, |v| v["id"] == "c4").await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["error"]["code"].as_str()),
        (Some("error"), Some("ORDER_NOT_OPEN"))
    );
    send(&mut alice, json!({"op":"order.new","id":"c5","order":{"symbol":"SBZ","side":"buy","type":"limit","price":"1.03","qty":"1"}})).await;
    let err = recv_until(&mut alice, WAIT, |v| v["id"] == "c5").await.unwrap();
    assert_eq!(err["error"]["code"], "TICK_SIZE");
    send(
        &mut alice,
        json!({"op":"order.new","id":"c6","order":{"symbol":"SBZ","qty":1}}),
    )
    .await;
    let err = recv_until(&mut alice, WAIT, |v| v["id"] == "c6").await.unwrap();
    assert_eq!(err["error"]["code"], "INVALID_BODY");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_on_the_socket() {
    let app = start().await;
    // A bad token on the upgrade is refused before upgrading.
    let mut req = format!("ws://{}/api/v1/stream", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nonsense".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(refused.is_err(), "upgrade with a bad token must fail");

    let mut ws = ws_connect(&app).await;
    send(&mut ws, json!({"op":"subscribe","channels":["orders"],"id":1})).await;
    assert_eq!(recv(&mut ws, WAIT).await.unwrap()["error"]["code"], "UNAUTHORIZED");
    send(&mut ws, json!({"op":"order.cancel","id":2,"order_id":"1"})).await;
    assert_eq!(recv(&mut ws, WAIT).await.unwrap()["error"]["code"], "UNAUTHORIZED");
    send(&mut ws, json!({"op":"auth","id":3,"token":"x.y.z"})).await;
    assert_eq!(recv(&mut ws, WAIT).await.unwrap()["error"]["code"], "UNAUTHORIZED");
    send(&mut ws, json!({"op":"auth","id":4,"token":token("bob","viewer")})).await;
    let ok = recv(&mut ws, WAIT).await.unwrap();
    assert_eq!(
        (ok["type"].as_str(), ok["account"].as_str()),
        (Some("authenticated"), Some("bob"))
    );
    send(&mut ws, json!({"op":"order.cancel","id":5,"order_id":"1"})).await;
    assert_eq!(
        recv(&mut ws, WAIT).await.unwrap()["error"]["code"],
        "FORBIDDEN",
        "viewers cannot trade"
    );
    send(&mut ws, json!({"op":"subscribe","channels":["orders"],"id":6})).await;
    assert_eq!(
        recv(&mut ws, WAIT).await.unwrap()["type"],
        "subscribed",
        "but may watch"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_closed_with_4008() {
    let app = start_with(&test_config(|doc| {
        doc["api"]["ws_private_queue_capacity"] = toml::Value::Integer(1);
    }))
    .await;
    let mut alice = ws_as(&app, "alice").await;
    send(&mut alice, json!({"op":"subscribe","channels":["orders"],"id":1})).await;
    recv(&mut alice, WAIT).await.unwrap();
    recv(&mut alice, WAIT).await.unwrap();
    let client = reqwest::Client::new();
    for k in 0..10 {
        let r = client
            .post(http(&app, "/api/v1/orders"))
            .bearer_auth(token("alice", "trader"))
            .json(&json!({"symbol":"SBZ","side":"buy","type":"limit","price":format!("5{k}.00"),"qty":"1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    // One mass cancel: ten cancellations reach the connection in one burst.
    let r = client
        .delete(http(&app, "/api/v1/orders?symbol=SBZ"))
        .bearer_auth(token("alice", "trader"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, alice.next()).await {
        if let Message::Close(Some(frame)) = msg {
            code = Some(u16::from(frame.code));
            break;
        }
    }
    assert_eq!(
        code,
        Some(4008),
        "closed with the documented code instead of dropping private events"
    );
    app.shutdown().await.unwrap();
}
