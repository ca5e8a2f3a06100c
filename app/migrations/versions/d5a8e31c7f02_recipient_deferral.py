"""recipients: deferral (next_attempt_at, first_deferred_at, attempts) and the due index

Revision ID: d5a8e31c7f02
Revises: a41c7e9d2b63
Create Date: 2026-11-30 14:05:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'd5a8e31c7f02'
down_revision = 'a41c7e9d2b63'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('first_deferred_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.create_index('ix_recipients_mailing_due',
                              ['mailing_id', 'response', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.drop_index('ix_recipients_mailing_due')
        batch_op.drop_column('attempts')
        batch_op.drop_column('first_deferred_at')
        batch_op.drop_column('next_attempt_at')
