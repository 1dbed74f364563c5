//! Organizations and memberships: lookups, and creating, renaming and deleting organizations.
//! Deleting counts the unfinished jobs and provisioner keys that block it (read-only counts on
//! those tables; every write about jobs stays in `jobs.rs`).

use sea_orm::sea_query::{Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
};
use uuid::Uuid;

use super::{Store, StoreError, StoreResult, is_unique_violation};
use crate::domain::now;
use crate::domain::organization::{
    NewOrganization, Organization, OrganizationPatch, is_default_keyword,
};
use crate::entity::{organization, organization_member, provisioner_job, provisioner_key};

/// Shown when creating an organization whose name is taken (as in Coder).
pub const NAME_TAKEN: &str = "Organization already exists with that name.";

/// What keeps an organization from being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteBlockers {
    /// Jobs not completed yet (pending, running or canceling).
    pub unfinished_jobs: u64,
    pub provisioner_keys: u64,
}

/// The outcome of [`Store::delete_organization`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrganizationDeletion {
    Deleted,
    Blocked(DeleteBlockers),
}

impl Store {
    /// The organization every deployment has from its first start.
    pub async fn default_organization(&self) -> StoreResult<Organization> {
        organization::Entity::find()
            .filter(organization::Column::IsDefault.eq(true))
            .one(self.connection())
            .await?
            .map(Organization::from)
            .ok_or(StoreError::NotFound)
    }

    /// The default organization's id, read once: it is seeded by the migrations and can be
    /// neither deleted nor replaced, and every PSK acquire needs it.
    pub async fn default_organization_id(&self) -> StoreResult<Uuid> {
        if let Some(id) = self.default_org.get() {
            return Ok(*id);
        }
        let id = self.default_organization().await?.id;
        Ok(*self.default_org.get_or_init(|| id))
    }

    /// Resolves `{organization}` in a path: an id, a name, or the keyword `default`. Names
    /// (and the keyword) are compared ignoring case, as in Coder: they are unique regardless
    /// of case, so `Acme` finds `acme`.
    /// The id of the organization `ident` names; the default keyword costs no statement (the
    /// default organization's id never changes). For routes that need only the id.
    pub async fn resolve_organization_id(&self, ident: &str) -> StoreResult<Uuid> {
        if is_default_keyword(ident) {
            return self.default_organization_id().await;
        }
        Ok(self.resolve_organization(ident).await?.id)
    }

    pub async fn resolve_organization(&self, ident: &str) -> StoreResult<Organization> {
        if is_default_keyword(ident) {
            return self.default_organization().await;
        }
        let query = match Uuid::parse_str(ident) {
            Ok(id) => organization::Entity::find_by_id(id),
            Err(_) => {
                organization::Entity::find().filter(lower_name().eq(ident.to_ascii_lowercase()))
            }
        };
        query
            .one(self.connection())
            .await?
            .map(Organization::from)
            .ok_or(StoreError::NotFound)
    }

    pub async fn is_member(&self, organization_id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        Ok(organization_member::Entity::find()
            .filter(organization_member::Column::OrganizationId.eq(organization_id))
            .filter(organization_member::Column::UserId.eq(user_id))
            .count(self.connection())
            .await?
            > 0)
    }

    /// Ids of the organizations a user belongs to, in a stable order.
    pub async fn organization_ids_of(&self, user_id: Uuid) -> StoreResult<Vec<Uuid>> {
        Ok(organization_member::Entity::find()
            .select_only()
            .column(organization_member::Column::OrganizationId)
            .filter(organization_member::Column::UserId.eq(user_id))
            .order_by_asc(organization_member::Column::CreatedAt)
            .into_tuple()
            .all(self.connection())
            .await?)
    }

    /// Every organization (`member: None`) or those `member` belongs to, ordered by name.
    pub async fn list_organizations(&self, member: Option<Uuid>) -> StoreResult<Vec<Organization>> {
        let mut query = organization::Entity::find().order_by_asc(organization::Column::Name);
        if let Some(user_id) = member {
            let memberships = organization_member::Entity::find()
                .select_only()
                .column(organization_member::Column::OrganizationId)
                .filter(organization_member::Column::UserId.eq(user_id))
                .into_query();
            query = query.filter(organization::Column::Id.in_subquery(memberships));
        }
        let rows = query.all(self.connection()).await?;
        Ok(rows.into_iter().map(Organization::from).collect())
    }

    /// Creates an organization with `creator` as its first member. `Conflict` when the name is
    /// taken (compared case-insensitively, so `Acme` and `acme` cannot both exist).
    pub async fn create_organization(
        &self,
        new: NewOrganization,
        creator: Uuid,
    ) -> StoreResult<Organization> {
        let txn = self.connection().begin().await?;
        if name_taken(&txn, new.name.as_str(), None).await? {
            return Err(StoreError::conflict(NAME_TAKEN, None));
        }
        let at = now();
        let created = organization::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(new.name.as_str().to_string()),
            display_name: Set(new.display_name),
            description: Set(new.description),
            icon: Set(new.icon),
            is_default: Set(false),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&txn)
        .await
        .map_err(|e| taken_or(e, || StoreError::conflict(NAME_TAKEN, None)))?;
        organization_member::ActiveModel {
            organization_id: Set(created.id),
            user_id: Set(creator),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(created.into())
    }

    /// Applies a patch; renaming to a taken name is a `Conflict` on the `name` field.
    pub async fn update_organization(
        &self,
        id: Uuid,
        patch: OrganizationPatch,
    ) -> StoreResult<Organization> {
        let txn = self.connection().begin().await?;
        let current = organization::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound)?;
        let rename_conflict = |name: &str| {
            StoreError::conflict(
                format!("Organization already exists with the name \"{name}\"."),
                Some("name"),
            )
        };
        if let Some(name) = &patch.name
            && name_taken(&txn, name.as_str(), Some(id)).await?
        {
            return Err(rename_conflict(name.as_str()));
        }
        let new_name = patch.name.as_ref().map(|n| n.as_str().to_string());
        let mut model: organization::ActiveModel = current.into();
        if let Some(name) = &new_name {
            model.name = Set(name.clone());
        }
        if let Some(display_name) = patch.display_name {
            model.display_name = Set(display_name);
        }
        if let Some(description) = patch.description {
            model.description = Set(description);
        }
        if let Some(icon) = patch.icon {
            model.icon = Set(icon);
        }
        model.updated_at = Set(now());
        let updated = model.update(&txn).await.map_err(|e| {
            taken_or(e, || {
                rename_conflict(new_name.as_deref().unwrap_or_default())
            })
        })?;
        txn.commit().await?;
        Ok(updated.into())
    }

    /// Deletes a non-default organization unless unfinished jobs or provisioner keys remain;
    /// check and delete are one statement, so a job enqueued meanwhile is never lost. Finished
    /// jobs, daemons and memberships go with the organization.
    pub async fn delete_organization(&self, id: Uuid) -> StoreResult<OrganizationDeletion> {
        let deleted = organization::Entity::delete_many()
            .filter(organization::Column::Id.eq(id))
            .filter(organization::Column::IsDefault.eq(false))
            .filter(Expr::exists(unfinished_jobs(id)).not())
            .filter(Expr::exists(keys_of(id)).not())
            .exec(self.connection())
            .await?;
        if deleted.rows_affected > 0 {
            return Ok(OrganizationDeletion::Deleted);
        }
        let blockers = DeleteBlockers {
            unfinished_jobs: provisioner_job::Entity::find()
                .filter(provisioner_job::Column::OrganizationId.eq(id))
                .filter(provisioner_job::Column::CompletedAt.is_null())
                .count(self.connection())
                .await?,
            provisioner_keys: provisioner_key::Entity::find()
                .filter(provisioner_key::Column::OrganizationId.eq(id))
                .count(self.connection())
                .await?,
        };
        if blockers.unfinished_jobs == 0 && blockers.provisioner_keys == 0 {
            // Gone meanwhile, or the default organization (callers refuse that one earlier).
            return Err(StoreError::NotFound);
        }
        Ok(OrganizationDeletion::Blocked(blockers))
    }
}

fn unfinished_jobs(organization_id: Uuid) -> sea_orm::sea_query::SelectStatement {
    provisioner_job::Entity::find()
        .select_only()
        .column(provisioner_job::Column::Id)
        .filter(provisioner_job::Column::OrganizationId.eq(organization_id))
        .filter(provisioner_job::Column::CompletedAt.is_null())
        .into_query()
}

fn keys_of(organization_id: Uuid) -> sea_orm::sea_query::SelectStatement {
    provisioner_key::Entity::find()
        .select_only()
        .column(provisioner_key::Column::Id)
        .filter(provisioner_key::Column::OrganizationId.eq(organization_id))
        .into_query()
}

/// `lower(name)`: names are ASCII (the name rule), so SQL's `lower` and Rust's agree.
fn lower_name() -> SimpleExpr {
    Func::lower(Expr::col(organization::Column::Name)).into()
}

/// Whether another organization (not `except`) has `name`, ignoring case.
async fn name_taken(
    db: &impl ConnectionTrait,
    name: &str,
    except: Option<Uuid>,
) -> StoreResult<bool> {
    let mut query = organization::Entity::find().filter(lower_name().eq(name.to_ascii_lowercase()));
    if let Some(id) = except {
        query = query.filter(organization::Column::Id.ne(id));
    }
    Ok(query.count(db).await? > 0)
}

fn taken_or(error: sea_orm::DbErr, conflict: impl FnOnce() -> StoreError) -> StoreError {
    if is_unique_violation(&error) {
        conflict()
    } else {
        error.into()
    }
}
