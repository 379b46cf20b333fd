//! Jobs written by the reference Python client (`rrq==0.11.1` from PyPI)
//! are listed and shown like our own.

use serde_json::Value;

use crate::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_the_reference_python_client_are_listed() {
    let env = Env::new().await;
    let venv = rrq_test_support::python::venv();
    let script = r#"
import asyncio, os
from rrq.client import RRQClient

async def main():
    client = RRQClient(config={"redis_dsn": os.environ["RRQ_TEST_DSN"]})
    job_id = await client.enqueue("send_welcome", {"params": {"user": 42}, "queue_name": "signups"})
    await client.close()
    print(job_id)

asyncio.run(main())
"#;
    let out = venv.run_script(script, &[("RRQ_TEST_DSN", env.redis.url())]);
    let id = out.trim().lines().last().expect("the script prints the job id").to_owned();

    let shown = env.rrq(&["job", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["function_name"], "send_welcome");
    assert_eq!(shown["job_params"], serde_json::json!({"user": 42}));
    assert_eq!(shown["queue_name"], "rrq:queue:signups");
    assert_eq!(shown["status"], "PENDING");

    let table = env.rrq(&["job", "show", &id]).ok();
    assert_eq!(table.cells("function_name"), ["function_name", "send_welcome"]);

    let inspected = env.rrq(&["queue", "inspect", "signups", "--json"]).ok().json();
    let rows = inspected.as_array().expect("an array");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["job_id"], Value::String(id.clone()));
    assert_eq!(rows[0]["job"]["function_name"], "send_welcome");

    let listed = env.rrq(&["queue", "inspect", "signups"]).ok();
    assert_eq!(&listed.cells("1 ")[1..4], [id.as_str(), "send_welcome", "PENDING"]);
}
