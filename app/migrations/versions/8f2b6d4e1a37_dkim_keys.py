"""dkim_keys: a DKIM signing key per sending domain

Revision ID: 8f2b6d4e1a37
Revises: 5e1d0c7a9b21
Create Date: 2026-11-30 13:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '8f2b6d4e1a37'
down_revision = '5e1d0c7a9b21'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dkim_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('selector', sa.String(length=200), nullable=False),
    sa.Column('private_key_pem', sa.Text(), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('bits', sa.Integer(), nullable=False),
    sa.Column('origin', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dkim_keys')),
    sa.UniqueConstraint('domain', name=op.f('uq_dkim_keys_domain'))
    )


def downgrade():
    op.drop_table('dkim_keys')
