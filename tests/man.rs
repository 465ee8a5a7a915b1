//! The man page the package ships (`docs/synqall-reconciler.1`) is generated from the command
//! line definition by clap_mangen and must match it: a flag added without regenerating the page
//! fails here. Regenerate with `UPDATE_MAN=1 cargo test --test man`.

use clap::CommandFactory;
use synqall_reconciler::cli::Cli;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/synqall-reconciler.1");

#[test]
fn the_shipped_man_page_matches_the_command_line() {
    let mut rendered = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut rendered)
        .expect("render the man page");
    let rendered = String::from_utf8(rendered).expect("UTF-8");
    if std::env::var_os("UPDATE_MAN").is_some() {
        std::fs::write(PAGE, &rendered).expect("write docs/synqall-reconciler.1");
    }
    let shipped = std::fs::read_to_string(PAGE).unwrap_or_default();
    assert!(
        shipped == rendered,
        "docs/synqall-reconciler.1 is out of date: run `UPDATE_MAN=1 cargo test --test man` and commit it"
    );
    for section in [
        "run",
        "migrate",
        "status",
        "doctor",
        "revert",
        "reconcile\\-now",
        "Exit status",
        "database\\-url",
    ] {
        assert!(
            rendered.contains(section),
            "{section} missing from the man page"
        );
    }
}
