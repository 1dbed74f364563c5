//! Organization names are unique regardless of case (as in Coder, whose index is on
//! `lower(name)`): the store checks before writing, and this index makes two concurrent
//! creates of `Acme` and `acme` fail cleanly instead of both succeeding. SQLite and PostgreSQL
//! both support indexes on expressions.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX idx_organizations_name_lower ON organizations (lower(name))",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX idx_organizations_name_lower")
            .await?;
        Ok(())
    }
}
