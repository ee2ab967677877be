//! Database roles on PostgreSQL: what `migrate --grant-to` grants the runtime role, and
//! the start-up check that the gateway's own role cannot alter the audit log.

use sqlx::Row;

use super::{Store, StoreError};

/// The audit tables. The runtime role may read them and append to them (and move the
/// chain head); it may not own them, update or delete their rows, truncate them, or
/// create or switch off their triggers.
pub const AUDIT_TABLES: [&str; 3] = ["audit_log", "audit_checkpoints", "audit_head"];

/// sqlx's own bookkeeping: the runtime role reads it to see that migrations are applied.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// A role name `migrate --grant-to` accepts (it is quoted into SQL, so it is checked
/// first): a letter or underscore, then letters, digits or underscores, at most 63.
pub fn valid_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Store {
    /// PostgreSQL: what the database role `role` could do to the audit tables beyond
    /// reading and appending, one problem per line (table and privilege names only).
    /// Empty when it has no such power. SQLite has no roles: always empty (whoever can
    /// write the file can rewrite anything; docs/governance.md).
    pub async fn audit_powers_of(&self, role: &str) -> Result<Vec<String>, StoreError> {
        if !self.backend.has_roles() {
            return Ok(Vec::new());
        }
        let mut problems = Vec::new();
        let superuser = sqlx::query(
            "SELECT CAST(rolsuper AS INTEGER) AS superuser FROM pg_roles WHERE rolname = $1",
        )
        .bind(role.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        match superuser {
            None => return Err(StoreError::Roles(format!("no database role '{role}'"))),
            Some(row) if row.try_get::<i32, _>("superuser")? == 1 => {
                problems.push("the role is a superuser".to_owned());
            }
            Some(_) => {}
        }
        let rows = sqlx::query(
            "SELECT CAST(t.tablename AS TEXT) AS name, \
               CAST(pg_has_role(CAST($1 AS name), t.tableowner, 'MEMBER') AS INTEGER) AS owner, \
               CAST(has_table_privilege(CAST($1 AS name), c.oid, 'UPDATE') AS INTEGER) AS can_update, \
               CAST(has_table_privilege(CAST($1 AS name), c.oid, 'DELETE') AS INTEGER) AS can_delete, \
               CAST(has_table_privilege(CAST($1 AS name), c.oid, 'TRUNCATE') AS INTEGER) AS can_truncate, \
               CAST(has_table_privilege(CAST($1 AS name), c.oid, 'TRIGGER') AS INTEGER) AS can_trigger \
             FROM pg_tables t \
             JOIN pg_class c ON c.relname = t.tablename \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = t.schemaname \
             WHERE t.schemaname = current_schema() \
               AND t.tablename IN ('audit_log', 'audit_checkpoints', 'audit_head') \
             ORDER BY t.tablename",
        )
        .bind(role.to_owned())
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let name: String = row.try_get("name")?;
            let mut powers = Vec::new();
            if row.try_get::<i32, _>("owner")? == 1 {
                powers.push("owner (can disable its triggers, alter or drop it)");
            }
            // The head is one row the writer moves forward; its rows are not the log.
            if name != "audit_head" && row.try_get::<i32, _>("can_update")? == 1 {
                powers.push("UPDATE");
            }
            for (column, power) in [
                ("can_delete", "DELETE"),
                ("can_truncate", "TRUNCATE"),
                ("can_trigger", "TRIGGER"),
            ] {
                if row.try_get::<i32, _>(column)? == 1 {
                    powers.push(power);
                }
            }
            if !powers.is_empty() {
                problems.push(format!("{name}: {}", powers.join(", ")));
            }
        }
        Ok(problems)
    }

    /// What the role this store is logged in as could do to the audit tables (see
    /// [`Store::audit_powers_of`]).
    pub async fn audit_protection(&self) -> Result<Vec<String>, StoreError> {
        if !self.backend.has_roles() {
            return Ok(Vec::new());
        }
        let role: String = sqlx::query("SELECT CAST(current_user AS TEXT) AS role")
            .fetch_one(&self.pool)
            .await?
            .try_get("role")?;
        self.audit_powers_of(&role).await
    }

    /// PostgreSQL, run by the owner after migrating: grants `role` what the gateway
    /// needs and nothing more on the audit tables (docs/governance.md lists the SQL).
    /// Every other table in the schema gets SELECT, INSERT, UPDATE and DELETE.
    pub async fn grant_runtime_role(&self, role: &str) -> Result<(), StoreError> {
        if !self.backend.has_roles() {
            return Err(StoreError::Roles(
                "--grant-to needs PostgreSQL: SQLite has no roles".to_owned(),
            ));
        }
        if !valid_role_name(role) {
            return Err(StoreError::Roles(format!(
                "'{role}' is not a role name (letters, digits and _, not starting with a digit)"
            )));
        }
        let me: String = sqlx::query("SELECT CAST(current_user AS TEXT) AS role")
            .fetch_one(&self.pool)
            .await?
            .try_get("role")?;
        if me == role {
            return Err(StoreError::Roles(
                "--grant-to names the role running migrate: the runtime role must be another one"
                    .to_owned(),
            ));
        }
        // Fails with "no database role" before granting anything.
        self.audit_powers_of(role).await?;
        let schema: String = sqlx::query("SELECT CAST(current_schema() AS TEXT) AS schema")
            .fetch_one(&self.pool)
            .await?
            .try_get("schema")?;
        let tables: Vec<String> = sqlx::query(
            "SELECT CAST(tablename AS TEXT) AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| row.try_get("name"))
        .collect::<Result<_, _>>()?;
        let operational: Vec<String> = tables
            .iter()
            .filter(|t| !AUDIT_TABLES.contains(&t.as_str()) && t.as_str() != MIGRATIONS_TABLE)
            .map(|t| quoted(t))
            .collect();
        let (role, schema) = (quoted(role), quoted(&schema));
        let mut statements = vec![
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("REVOKE ALL ON audit_log, audit_checkpoints, audit_head FROM {role}"),
            format!("GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO {role}"),
            format!("GRANT SELECT, UPDATE ON audit_head TO {role}"),
            format!("GRANT SELECT ON {MIGRATIONS_TABLE} TO {role}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
        ];
        if !operational.is_empty() {
            statements.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role}",
                operational.join(", ")
            ));
        }
        let mut tx = self.pool.begin().await?;
        for statement in &statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_checked_before_they_reach_sql() {
        for good in ["refgw_app", "_x", "App2"] {
            assert!(valid_role_name(good), "{good}");
        }
        for bad in [
            "",
            "2app",
            "app; DROP TABLE audit_log",
            "a\"b",
            "a-b",
            &"x".repeat(64),
        ] {
            assert!(!valid_role_name(bad), "{bad}");
        }
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
