//! The fake API server refuses what a real kube-apiserver refuses, so the
//! agent's tests cannot pass on leniency. Raw HTTP on loopback.

use lbd_test_support::fake_kube::{self, FakeKube};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request with the fake's token (unless `token` is false); returns
/// the status code and the body (the connection is closed after it).
async fn call(
    kube: &FakeKube,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    token: bool,
) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(kube.addr())
        .await
        .expect("connect");
    let auth = if token {
        format!("Authorization: Bearer {}\r\n", kube.token())
    } else {
        String::new()
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: fake\r\n{auth}Content-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_to_end(&mut raw),
    );
    read.await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const SVC: &str = "/api/v1/namespaces/default/services/web";

async fn with_service() -> FakeKube {
    let kube = FakeKube::start().await;
    kube.apply_service(fake_kube::service_lb(
        "default",
        "web",
        &[("http", 80, 30080, "TCP")],
        None,
    ));
    kube
}

#[tokio::test]
async fn requests_need_the_token_and_known_parameters() {
    let kube = with_service().await;
    assert_eq!(
        call(&kube, "GET", "/api/v1/services", "", "", false)
            .await
            .0,
        401
    );
    assert_eq!(
        call(&kube, "GET", "/api/v1/services", "", "", true).await.0,
        200
    );
    assert_eq!(
        call(&kube, "GET", "/api/v1/services?colour=red", "", "", true)
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            &kube,
            "GET",
            "/api/v1/services?fieldSelector=spec.type%3DLoadBalancer",
            "",
            "",
            true
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(&kube, "GET", "/api/v1/widgets", "", "", true).await.0,
        404
    );
    assert_eq!(
        call(
            &kube,
            "GET",
            "/api/v1/services?resourceVersionMatch=NotOlderThan",
            "",
            "",
            true
        )
        .await
        .0,
        422
    );
}

#[tokio::test]
async fn patches_respect_subresources_types_and_versions() {
    let kube = with_service().await;
    let status_patch = r#"{"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}, "spec": {"type": "ClusterIP"}}"#;
    let (code, _) = call(
        &kube,
        "PATCH",
        &format!("{SVC}/status"),
        MERGE,
        status_patch,
        true,
    )
    .await;
    assert_eq!(code, 200);
    let svc = kube.service("default", "web").expect("service");
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.1"
    );
    assert_eq!(
        svc["spec"]["type"], "LoadBalancer",
        "a status patch changed the spec"
    );

    let (code, _) = call(
        &kube,
        "PATCH",
        SVC,
        MERGE,
        r#"{"status": {"loadBalancer": {}}}"#,
        true,
    )
    .await;
    assert_eq!(code, 200);
    let svc = kube.service("default", "web").expect("service");
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.1",
        "an object patch changed the status"
    );

    assert_eq!(
        call(&kube, "PATCH", SVC, "application/json", "{}", true)
            .await
            .0,
        415
    );
    let stale = r#"{"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}"#;
    assert_eq!(call(&kube, "PATCH", SVC, MERGE, stale, true).await.0, 409);
    let failing_test = r#"[{"op": "test", "path": "/spec/type", "value": "NodePort"}]"#;
    assert_eq!(
        call(&kube, "PATCH", SVC, JSON_PATCH, failing_test, true)
            .await
            .0,
        422
    );
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object() {
    let kube = with_service().await;
    let add = r#"{"metadata": {"finalizers": ["example.com/x"]}}"#;
    assert_eq!(call(&kube, "PATCH", SVC, MERGE, add, true).await.0, 200);
    kube.delete_service("default", "web");
    let svc = kube.service("default", "web").expect("still there");
    assert!(!svc["metadata"]["deletionTimestamp"].is_null());
    let more = r#"{"metadata": {"finalizers": ["example.com/x", "example.com/y"]}}"#;
    assert_eq!(call(&kube, "PATCH", SVC, MERGE, more, true).await.0, 422);
    let none = r#"{"metadata": {"finalizers": null}}"#;
    assert_eq!(call(&kube, "PATCH", SVC, MERGE, none, true).await.0, 200);
    assert!(kube.service("default", "web").is_none());
}

#[tokio::test]
async fn watches_from_before_a_compaction_get_410() {
    let kube = with_service().await;
    let (_, list) = call(&kube, "GET", "/api/v1/services", "", "", true).await;
    let list: Value = serde_json::from_str(&list).expect("list JSON");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    kube.apply_service(fake_kube::service_lb(
        "default",
        "web",
        &[("http", 81, 30081, "TCP")],
        None,
    ));
    kube.compact();
    let path = format!("/api/v1/services?watch=true&resourceVersion={rv}&timeoutSeconds=1");
    let (code, body) = call(&kube, "GET", &path, "", "", true).await;
    assert_eq!(code, 200);
    let first = body.lines().find(|l| l.starts_with('{')).expect("an event");
    let event: Value = serde_json::from_str(first).expect("event JSON");
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
}
