use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker::init_tracing();
    broker::run(broker::Config::parse()).await
}
