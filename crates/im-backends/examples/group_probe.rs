//! A probe of how the broker at 127.0.0.1:9092 runs a consumer group
//! (driven by `scripts/group_probe.sh`; findings in docs/resilience.md):
//!
//! - `create TOPIC N`: a topic of N partitions;
//! - `produce TOPIC N`: a record every 50 ms, partitions in turn, its payload
//!   the time it was sent (ms);
//! - `member GROUP TOPIC INSTANCE|- ASSIGNOR SESSION_MS`: a member (static
//!   with a `group.instance.id` unless `-`), printing each assignment,
//!   revocation and record with the time (`PROBE_DEBUG=cgrp` adds
//!   librdkafka's group log).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Message};

fn now() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

struct Ctx;
impl ClientContext for Ctx {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        println!("{} LOG {fac} {msg}", now());
    }
}
impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(p) => {
                println!("{} ASSIGN {:?}", now(), p.elements().iter().map(|e| e.partition()).collect::<Vec<_>>())
            }
            Rebalance::Revoke(p) => {
                println!("{} REVOKE {:?}", now(), p.elements().iter().map(|e| e.partition()).collect::<Vec<_>>())
            }
            Rebalance::Error(e) => println!("{} REBALANCE_ERROR {e}", now()),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", "127.0.0.1:9092");
    match args[1].as_str() {
        "create" => {
            let admin: AdminClient<DefaultClientContext> = base.create().unwrap();
            let n: i32 = args[3].parse().unwrap();
            let r = admin
                .create_topics(&[NewTopic::new(&args[2], n, TopicReplication::Fixed(1))], &AdminOptions::new())
                .await
                .unwrap();
            println!("{r:?}");
        }
        "produce" => {
            let p: BaseProducer = base.clone().set("linger.ms", "0").create().unwrap();
            let n: i32 = args[3].parse().unwrap();
            let mut i = 0u64;
            loop {
                let payload = format!("{}", now());
                let _ = p.send(BaseRecord::<(), _>::to(&args[2]).partition((i % n as u64) as i32).payload(&payload));
                p.poll(Duration::ZERO);
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
                if i.is_multiple_of(20) {
                    p.flush(Duration::from_secs(1)).ok();
                }
            }
        }
        "member" => {
            let (group, topic, instance, strategy, session) = (&args[2], &args[3], &args[4], &args[5], &args[6]);
            let mut c = base.clone();
            c.set("group.id", group)
                .set("enable.auto.commit", "true")
                .set("auto.offset.reset", "latest")
                .set("session.timeout.ms", session)
                .set("heartbeat.interval.ms", (session.parse::<u64>().unwrap() / 3).to_string())
                .set("fetch.wait.max.ms", "20")
                .set("partition.assignment.strategy", strategy.as_str());
            if let Ok(dbg) = std::env::var("PROBE_DEBUG") {
                c.set("debug", dbg);
                c.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
            }
            if instance != "-" {
                c.set("group.instance.id", instance);
            }
            let consumer: BaseConsumer<Ctx> = c.create_with_context(Ctx).unwrap();
            consumer.subscribe(&[topic]).unwrap();
            println!("{} START", now());
            loop {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let sent: u128 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
                        println!("{} RECV p{} sent {} lag {}", now(), m.partition(), sent, now() - sent);
                    }
                    Some(Err(e)) => println!("{} ERR {e}", now()),
                    None => {}
                }
            }
        }
        _ => panic!("?"),
    }
}
