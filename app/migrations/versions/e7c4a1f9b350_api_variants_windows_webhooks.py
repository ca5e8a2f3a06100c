"""API tokens, suppressions, outbound webhooks, A/B variants, send windows, conversions,
transactional types, contact zones, connections per provider; send_batches.attempts becomes
handoff_reach

Revision ID: e7c4a1f9b350
Revises: d5a8e31c7f02
Create Date: 2026-11-30 15:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'e7c4a1f9b350'
down_revision = 'd5a8e31c7f02'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('scopes', sa.JSON(), nullable=False),
        sa.Column('rate_per_minute', sa.Integer(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_table(
        'suppressions',
        sa.Column('email_hash', sa.String(length=64), nullable=False),
        sa.Column('reason', sa.String(length=50), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('email_hash'),
    )
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('event_kinds', sa.JSON(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('cursor_event_id', sa.BigInteger(), nullable=False),
        sa.Column('failing_since', sa.DateTime(), nullable=True),
        sa.Column('disabled_at', sa.DateTime(), nullable=True),
        sa.Column('disabled_reason', sa.String(length=200), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('endpoint_id', sa.Integer(), nullable=False),
        sa.Column('first_event_id', sa.BigInteger(), nullable=False),
        sa.Column('last_event_id', sa.BigInteger(), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_latency_ms', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_deliveries_endpoint', 'webhook_deliveries', ['endpoint_id', 'id'])
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('latency_ms', sa.Integer(), nullable=False),
        sa.Column('error', sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_attempts_delivery', 'webhook_attempts', ['delivery_id', 'id'])
    op.create_table(
        'mailing_variants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('mailing_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('subject', sa.String(length=500), nullable=False),
        sa.Column('from_name', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['mailing_id'], ['mailings.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('mailing_id', 'position', name='uq_mailing_variants_position'),
    )
    op.create_table(
        'conversions',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('mailing_id', sa.Integer(), nullable=False),
        sa.Column('recipient_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('clicked_at', sa.DateTime(), nullable=False),
        sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['mailing_id'], ['mailings.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['recipient_id'], ['recipients.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('transaction_id'),
    )
    op.create_index('ix_conversions_mailing', 'conversions', ['mailing_id'])

    with op.batch_alter_table('email_types', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transactional', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_zone', sa.String(length=64), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint('uq_transactions_idempotency_key', ['idempotency_key'])
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('connections', sa.Integer(), nullable=False,
                                      server_default='4'))
    with op.batch_alter_table('send_batches', schema=None) as batch_op:
        batch_op.alter_column('attempts', new_column_name='handoff_reach',
                              existing_type=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('mailings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('api_token_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ab_share', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('ab_wait_minutes', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('ab_metric', sa.String(length=10), nullable=False,
                                      server_default='open'))
        batch_op.add_column(sa.Column('ab_winner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ab_decided_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('ab_decided_by', sa.String(length=20), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('window_start_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('window_end_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('window_days', sa.Integer(), nullable=False,
                                      server_default='127'))
        batch_op.add_column(sa.Column('local_delivery', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('resend_of_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resend_audience', sa.String(length=20), nullable=False,
                                      server_default=''))
        batch_op.create_unique_constraint('uq_mailings_idempotency_key', ['idempotency_key'])
        batch_op.create_foreign_key('fk_mailings_api_token', 'api_tokens', ['api_token_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_foreign_key('fk_mailings_resend_of', 'mailings', ['resend_of_id'], ['id'],
                                    ondelete='SET NULL')
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('variant_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('release_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key('fk_recipients_variant', 'mailing_variants', ['variant_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.drop_constraint('fk_recipients_variant', type_='foreignkey')
        batch_op.drop_column('release_at')
        batch_op.drop_column('variant_id')
    with op.batch_alter_table('mailings', schema=None) as batch_op:
        batch_op.drop_constraint('fk_mailings_resend_of', type_='foreignkey')
        batch_op.drop_constraint('fk_mailings_api_token', type_='foreignkey')
        batch_op.drop_constraint('uq_mailings_idempotency_key', type_='unique')
        for name in ('resend_audience', 'resend_of_id', 'local_delivery', 'window_days',
                     'window_end_minute', 'window_start_minute', 'ab_decided_by', 'ab_decided_at',
                     'ab_winner_id', 'ab_metric', 'ab_wait_minutes', 'ab_share', 'api_token_id',
                     'idempotency_key'):
            batch_op.drop_column(name)
    with op.batch_alter_table('send_batches', schema=None) as batch_op:
        batch_op.alter_column('handoff_reach', new_column_name='attempts',
                              existing_type=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('connections')
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_transactions_idempotency_key', type_='unique')
        batch_op.drop_column('idempotency_key')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('time_zone')
    with op.batch_alter_table('email_types', schema=None) as batch_op:
        batch_op.drop_column('transactional')
    op.drop_index('ix_conversions_mailing', table_name='conversions')
    op.drop_table('conversions')
    op.drop_table('mailing_variants')
    op.drop_index('ix_webhook_attempts_delivery', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_endpoint', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_endpoints')
    op.drop_table('suppressions')
    op.drop_table('api_tokens')
