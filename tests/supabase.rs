//! Supabase as it is: a cluster laid out by Supabase's own init scripts, whose `postgres` is
//! not a superuser and owns no `auth` schema. `migrate` as `postgres` prints the warnings the
//! server gives for what `postgres` may not grant, and the least-privilege login still sees
//! every row it needs, the orphaned-users check included.

mod common;

use common::{connect, empty_cluster, run_bin};
use synqall_reconciler::fixture::{create_supabase_like_database, SEED_FIX_SQL};
use synqall_reconciler::local_pg::ClusterOptions;

#[tokio::test]
async fn migrate_as_a_non_superuser_postgres_prints_warnings_and_the_login_sees_auth_users() {
    let options = ClusterOptions {
        superuser: "supabase_admin".into(),
        ..ClusterOptions::default()
    };
    let cluster = empty_cluster(options).await;
    let password = "postgres-owner-pw";
    let owner_url = create_supabase_like_database(&cluster, "project", password)
        .await
        .expect("create the Supabase-like project database");
    let owner = connect(&owner_url).await;
    let is_super: bool = owner
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_super, "postgres is no superuser here, as on Supabase");
    owner.batch_execute(SEED_FIX_SQL).await.unwrap();

    let env = [("DATABASE_URL", owner_url.as_str())];
    let migrated = run_bin(&["migrate"], &env, &[]).await;
    assert_eq!(migrated.code(), 0, "{}", migrated.stderr);
    assert!(
        migrated
            .stdout
            .lines()
            .any(|l| l == "  WARNING: no privileges were granted for \"auth\""),
        "{}",
        migrated.stdout
    );
    assert!(
        migrated.stderr.contains("migration: the server said"),
        "{}",
        migrated.stderr
    );

    // Data as the app has it; one user belongs to no organization.
    owner
        .batch_execute(
            "INSERT INTO auth.users (id, email) VALUES
               ('00000000-0000-0000-0000-0000000000a1', 'member@example.com'),
               ('00000000-0000-0000-0000-0000000000a2', 'loner@example.com');
             INSERT INTO public.organizations (id, name, used_minutes)
               VALUES ('00000000-0000-0000-0000-0000000000b1', 'Acme', 0);
             INSERT INTO public.user_organizations (user_id, organization_id)
               VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1');
             INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
               VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1',
                       'completed', 12);
             CREATE ROLE project_reconciler LOGIN PASSWORD 'login-pw' IN ROLE synqall_reconciler;",
        )
        .await
        .unwrap();
    let login = cluster.url_as("project_reconciler", "login-pw", "project");
    let env = [("DATABASE_URL", login.as_str())];
    let pass = run_bin(&["--reconcile-now"], &env, &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    assert_eq!(
        pass.grep("orphaned users check skipped").len(),
        0,
        "{}",
        pass.stderr
    );
    assert_eq!(
        pass.grep("users without any organization orphaned_users=1")
            .len(),
        1,
        "{}",
        pass.stderr
    );
    let stored: i32 = owner
        .query_one("SELECT used_minutes FROM public.organizations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 12);

    let doctor = run_bin(&["doctor"], &env, &[]).await;
    let users = doctor
        .stdout
        .lines()
        .find(|l| l.contains("orphaned users"))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(
        users.contains("1 user(s) in auth.users without any organization"),
        "{users}"
    );
    assert!(
        !doctor.stdout.lines().any(|l| l.starts_with("FAIL")),
        "{}",
        doctor.stdout
    );
}
