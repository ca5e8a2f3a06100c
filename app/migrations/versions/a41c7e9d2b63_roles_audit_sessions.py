"""roles (staff becomes editor), session stamps, audit entries, login throttles

Revision ID: a41c7e9d2b63
Revises: 3b7c9e2f4d10
Create Date: 2026-11-30 13:50:00

"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = 'a41c7e9d2b63'
down_revision = '3b7c9e2f4d10'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_stamp', sa.String(length=32), nullable=False,
                                      server_default=''))
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('role', sa.String),
                     sa.column('session_stamp', sa.String))
    op.execute(users.update().where(users.c.role == 'staff').values(role='editor'))
    bind = op.get_bind()
    for (user_id,) in bind.execute(sa.select(users.c.id)).all():
        bind.execute(users.update().where(users.c.id == user_id)
                     .values(session_stamp=secrets.token_hex(8)))

    op.create_table(
        'audit_entries',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('user_email', sa.String(length=254), nullable=False),
        sa.Column('action', sa.String(length=50), nullable=False),
        sa.Column('target_kind', sa.String(length=30), nullable=False),
        sa.Column('target_id', sa.String(length=64), nullable=False),
        sa.Column('detail', sa.String(length=500), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_target', 'audit_entries', ['target_kind', 'target_id', 'id'])
    op.create_index('ix_audit_user', 'audit_entries', ['user_id', 'id'])
    op.create_index('ix_audit_action', 'audit_entries', ['action', 'id'])
    op.create_table(
        'login_throttles',
        sa.Column('key', sa.String(length=320), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('locked_until', sa.DateTime(), nullable=True),
        sa.Column('lockouts', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )


def downgrade():
    op.drop_table('login_throttles')
    op.drop_index('ix_audit_action', table_name='audit_entries')
    op.drop_index('ix_audit_user', table_name='audit_entries')
    op.drop_index('ix_audit_target', table_name='audit_entries')
    op.drop_table('audit_entries')
    users = sa.table('users', sa.column('role', sa.String))
    op.execute(users.update().where(users.c.role == 'editor').values(role='staff'))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_stamp')
