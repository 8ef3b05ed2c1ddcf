//! Rate limiting of POST /api/metrics through RATELIMIT.CHECK: the 429 and its headers, one
//! limit shared exactly by several API instances, and who the client is (X-Forwarded-For only
//! from trusted proxies).

use tally_api::ratelimit::TrustedProxies;
use tally_tests::api::{assert_too_many_requests, config, exists, stored_count, TestApp, EXAMPLE};
use tally_tests::http::header;
use tally_tests::Server;

#[tokio::test]
async fn the_sixth_post_in_a_window_gets_429_with_retry_after_and_ratelimit_headers() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for i in 0..5 {
        let resp = app.post_metric(EXAMPLE).await;
        assert_eq!(resp.status(), 201, "request {i}");
        assert_eq!(
            header(&resp, "ratelimit-policy").as_deref(),
            Some("\"default\";q=5;w=60")
        );
        assert_eq!(
            header(&resp, "ratelimit").as_deref(),
            Some(format!("\"default\";r={};t=60", 4 - i).as_str())
        );
        assert_eq!(header(&resp, "retry-after"), None);
    }
    let resp = app.post_metric(EXAMPLE).await;
    assert_too_many_requests(resp, 0).await;
    assert_eq!(
        stored_count(&server, "cpu"),
        5,
        "the denied request stored nothing"
    );
    let metrics = app.prometheus().await;
    assert!(metrics.contains("tally_ratelimit_decisions_total{decision=\"allowed\"} 5"));
    assert!(metrics.contains("tally_ratelimit_decisions_total{decision=\"denied\"} 1"));
}

#[tokio::test]
async fn the_limit_and_window_come_from_the_configuration() {
    let server = Server::start();
    let app = TestApp::spawn_with(tally_api::config::Config {
        rate_limit: 2,
        rate_window_s: 5,
        ..config(&server.url())
    })
    .await;
    for _ in 0..2 {
        let resp = app.post_metric(EXAMPLE).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(
            header(&resp, "ratelimit-policy").as_deref(),
            Some("\"default\";q=2;w=5")
        );
    }
    let resp = app.post_metric(EXAMPLE).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
}

#[tokio::test]
async fn two_api_instances_on_one_redis_share_one_limit_exactly() {
    let server = Server::start();
    let a = TestApp::spawn(&server).await;
    let b = TestApp::spawn(&server).await;
    let mut created = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        match app.post_metric(EXAMPLE).await.status().as_u16() {
            201 => created += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(stored_count(&server, "cpu"), 5);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for i in 0..5 {
        let spoofed = format!("203.0.113.{i}");
        let resp = app
            .post_metric_as(EXAMPLE, Some("application/json"), Some(&spoofed))
            .await;
        assert_eq!(resp.status(), 201);
    }
    let resp = app
        .post_metric_as(EXAMPLE, Some("application/json"), Some("203.0.113.99"))
        .await;
    assert_eq!(resp.status(), 429, "every request counted against the peer");
    assert!(exists(&server, "ratelimit:127.0.0.1"));
    assert!(!exists(&server, "ratelimit:203.0.113.0"));
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let server = Server::start();
    let app = TestApp::spawn_with(tally_api::config::Config {
        trusted_proxies: TrustedProxies::parse("127.0.0.1/32, 10.0.0.0/8").unwrap(),
        ..config(&server.url())
    })
    .await;
    for _ in 0..5 {
        let resp = app
            .post_metric_as(EXAMPLE, Some("application/json"), Some("198.51.100.1"))
            .await;
        assert_eq!(resp.status(), 201);
    }
    // The client cannot escape by writing its own entry on the left: the walk from the right
    // stops at the first untrusted address, which the proxy appended.
    let resp = app
        .post_metric_as(
            EXAMPLE,
            Some("application/json"),
            Some("192.0.2.77, 198.51.100.1, 10.1.2.3"),
        )
        .await;
    assert_eq!(resp.status(), 429);
    // Another client behind the same proxy has its own budget.
    let resp = app
        .post_metric_as(EXAMPLE, Some("application/json"), Some("198.51.100.2"))
        .await;
    assert_eq!(resp.status(), 201);
    assert!(exists(&server, "ratelimit:198.51.100.1"));
    assert!(exists(&server, "ratelimit:198.51.100.2"));
    assert!(!exists(&server, "ratelimit:127.0.0.1"));
    assert!(!exists(&server, "ratelimit:192.0.2.77"));
}

#[tokio::test]
async fn the_addresses_of_one_ipv6_64_share_one_budget_and_another_64_has_its_own() {
    let server = Server::start();
    let app = TestApp::spawn_with(tally_api::config::Config {
        trusted_proxies: TrustedProxies::parse("127.0.0.1/32").unwrap(),
        ..config(&server.url())
    })
    .await;
    // Twelve different addresses of 2001:db8:1:2::/64, as one subscriber could use: the
    // default budget (5 per 60 s) is shared.
    let mut created = 0;
    for i in 1..=12 {
        let client = format!("2001:db8:1:2:{i:x}:{:x}::{i:x}", (i * 7919) % 0x1_0000);
        let resp = app
            .post_metric_as(EXAMPLE, Some("application/json"), Some(&client))
            .await;
        match resp.status().as_u16() {
            201 => created += 1,
            429 => {}
            other => panic!("{client}: unexpected {other}"),
        }
    }
    assert_eq!(created, 5, "one /64 is one client");
    // The bracketed, port-carrying form of an address in the same /64 is the same client.
    let resp = app
        .post_metric_as(
            EXAMPLE,
            Some("application/json"),
            Some("[2001:db8:1:2::ffff]:4431"),
        )
        .await;
    assert_eq!(resp.status(), 429);
    // The neighbouring /64 is another client, with its own budget.
    let resp = app
        .post_metric_as(EXAMPLE, Some("application/json"), Some("2001:db8:1:3::1"))
        .await;
    assert_eq!(resp.status(), 201);
    assert!(exists(&server, "ratelimit:2001:db8:1:2::"));
    assert!(exists(&server, "ratelimit:2001:db8:1:3::"));
    assert!(!exists(&server, "ratelimit:2001:db8:1:2:1:1eef::1"));
    assert_eq!(stored_count(&server, "cpu"), 6);
}

#[tokio::test]
async fn an_ipv4_mapped_ipv6_client_is_the_ipv4_client() {
    let server = Server::start();
    let app = TestApp::spawn_with(tally_api::config::Config {
        trusted_proxies: TrustedProxies::parse("127.0.0.1/32").unwrap(),
        ..config(&server.url())
    })
    .await;
    // Alternating the two spellings of one IPv4 client: still one budget of 5, and IPv4 clients
    // are not grouped by network (203.0.113.8 is someone else).
    for i in 0..5 {
        let client = if i % 2 == 0 {
            "203.0.113.7"
        } else {
            "::ffff:203.0.113.7"
        };
        let resp = app
            .post_metric_as(EXAMPLE, Some("application/json"), Some(client))
            .await;
        assert_eq!(resp.status(), 201, "{client}");
    }
    let resp = app
        .post_metric_as(
            EXAMPLE,
            Some("application/json"),
            Some("::ffff:203.0.113.7"),
        )
        .await;
    assert_eq!(resp.status(), 429);
    let resp = app
        .post_metric_as(EXAMPLE, Some("application/json"), Some("203.0.113.8"))
        .await;
    assert_eq!(resp.status(), 201);
    assert!(exists(&server, "ratelimit:203.0.113.7"));
    assert!(!exists(&server, "ratelimit:::ffff:203.0.113.7"));
}
